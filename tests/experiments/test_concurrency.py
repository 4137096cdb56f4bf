"""Two reviewers approve the same experiment at the same moment, from separate connections."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from experiments import services
from experiments.models import AuditLog, Experiment
from experiments.services import WorkflowError

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def _race(experiment_pk: int, actors: list, *, action) -> list[str]:
    """Run action(experiment, actor) in one thread per actor, released together; returns outcomes."""
    barrier = threading.Barrier(len(actors))
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(actor):
        try:
            experiment = Experiment.objects.get(pk=experiment_pk)  # each thread: its own connection
            barrier.wait(timeout=10)
            action(experiment, actor)
            result = "ok"
        except WorkflowError as exc:
            result = f"refused:{exc.code}"
        except PermissionDenied:
            result = "forbidden"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(a,)) for a in actors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return sorted(outcomes)


def test_approve__two_reviewers_at_once__exactly_one_wins_one_audit_row(make_experiment, reviewer, approver):
    # Given an experiment in review and two reviewers, each with their own database connection
    experiment = make_experiment(status="review")
    # When both approve it at the same moment
    outcomes = _race(
        experiment.pk,
        [reviewer, approver],
        action=lambda e, actor: services.experiment_approve_and_start(experiment=e, actor=actor),
    )
    # Then exactly one succeeds, the other is refused, and there is exactly one approval in the audit log
    experiment.refresh_from_db()
    assert outcomes == ["ok", "refused:invalid_state"]
    assert experiment.status == "running"
    assert AuditLog.objects.filter(experiment=experiment, transition="approve_and_start").count() == 1


def test_approve_vs_request_changes__at_once__one_wins(make_experiment, reviewer, approver):
    # Given an experiment in review; one reviewer approves while the other sends it back
    experiment = make_experiment(status="review")

    def act(e, actor):
        if actor == reviewer:
            services.experiment_approve_and_start(experiment=e, actor=actor)
        else:
            services.experiment_request_changes(experiment=e, actor=actor, comment="Wait")

    # When both act at the same moment
    outcomes = _race(experiment.pk, [reviewer, approver], action=act)
    # Then exactly one transition out of review is recorded, matching the final state
    experiment.refresh_from_db()
    entries = AuditLog.objects.filter(experiment=experiment, from_state="review")
    assert outcomes == ["ok", "refused:invalid_state"]
    assert entries.count() == 1
    assert entries.get().to_state == experiment.status
