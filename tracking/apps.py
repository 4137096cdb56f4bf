from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from experiments.models import Experiment, ExperimentMetric, Layer, Variant
        from tracking import schema  # noqa: F401 - registers the OpenAPI auth extension
        from tracking.models import ServiceAPIKey

        for model in (Experiment, Variant, ExperimentMetric, Layer):
            post_save.connect(_forget_experiments, sender=model, dispatch_uid=f"ingest-cache-{model.__name__}")
            post_delete.connect(_forget_experiments, sender=model, dispatch_uid=f"ingest-cache-del-{model.__name__}")
        post_save.connect(_forget_api_keys, sender=ServiceAPIKey, dispatch_uid="api-key-cache")
        post_delete.connect(_forget_api_keys, sender=ServiceAPIKey, dispatch_uid="api-key-cache-del")


def _forget_experiments(**kwargs) -> None:
    """A plan or status saved in this process: the single-event path re-reads experiments."""
    from tracking.selectors import assignment_rules_forget, running_experiment_forget

    running_experiment_forget()
    assignment_rules_forget()


def _forget_api_keys(**kwargs) -> None:
    """A key saved or deleted in this process (revoked in the admin, say): this process verifies keys again at
    once; other processes within SIGNALDASH_API_KEY_CACHE_S (tracking/auth.py)."""
    from tracking.auth import api_key_cache_clear

    api_key_cache_clear()
