"""The metric catalog API: GET /api/metrics and GET /api/metrics/<key> (read scope, or view permission)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import catalog
from signaldash.permissions import CanReadExperiments, private_no_store
from tracking.auth import APIKeyAuthentication


class MetricOutputSerializer(serializers.Serializer):
    """One catalog metric: the model's field names; ratio parts by key, the owner by username."""

    key = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    owner = serializers.CharField(allow_null=True)
    kind = serializers.ChoiceField(choices=["binary", "mean", "ratio", "funnel"])
    direction = serializers.ChoiceField(choices=["increase", "decrease"])
    event = serializers.CharField(allow_blank=True)
    aggregation = serializers.ChoiceField(choices=["sum", "count"])
    window_hours = serializers.FloatField(allow_null=True)
    delay_hours = serializers.FloatField()
    cap = serializers.ChoiceField(choices=["none", "absolute", "percentile"])
    cap_value = serializers.FloatField(allow_null=True)
    cap_ignore_zeros = serializers.BooleanField()
    filter_prop = serializers.CharField(allow_blank=True)
    filter_values = serializers.ListField(child=serializers.CharField())
    numerator = serializers.CharField(allow_null=True, help_text="Ratio: the numerator metric's key.")
    denominator = serializers.CharField(allow_null=True, help_text="Ratio: the denominator metric's key.")
    steps = serializers.ListField(child=serializers.CharField(), help_text="Funnel: the event names, in order.")
    official = serializers.BooleanField()
    archived = serializers.BooleanField()
    used_by = serializers.ListField(child=serializers.SlugField(), help_text="Slugs of the experiments using it.")


class MetricErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


ERRORS = {
    401: OpenApiResponse(MetricErrorSerializer, description="No session and no valid API key."),
    403: OpenApiResponse(MetricErrorSerializer, description="No view permission, or a key without `read`."),
}


def _metric_json(metric) -> dict:
    return {**catalog.metric_as_dict(metric), "used_by": catalog.metric_used_by(metric=metric)}


class MetricListApi(APIView):
    """GET /api/metrics — the catalog (archived metrics included, flagged), by key."""

    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [CanReadExperiments]

    @extend_schema(operation_id="metric_list", responses={200: MetricOutputSerializer(many=True), **ERRORS})
    def get(self, request) -> Response:
        return Response([_metric_json(m) for m in catalog.metric_list(archived=True)])


class MetricDetailApi(APIView):
    """GET /api/metrics/<key> — one catalog metric; 404 JSON for an unknown key."""

    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [CanReadExperiments]

    @extend_schema(
        operation_id="metric_detail",
        responses={
            200: MetricOutputSerializer,
            404: OpenApiResponse(MetricErrorSerializer, description="Unknown metric key."),
            **ERRORS,
        },
    )
    def get(self, request, key: str) -> Response:
        metric = catalog.metric_by_key(key=key)
        if metric is None:
            raise NotFound(f"No metric with key '{key}'.")
        return Response(_metric_json(metric))


metric_list_api = login_not_required(private_no_store(MetricListApi.as_view()))
metric_detail_api = login_not_required(private_no_store(MetricDetailApi.as_view()))
