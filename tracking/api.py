"""The tracking and assignment HTTP API: validate, call one service, serialize.

Contract (clients depend on it): `POST /api/track`, `POST /api/track/batch`, `POST /api/assign`,
`POST /api/assign/all`, `GET /api/assign/rules`, all
authenticated with `Authorization: Bearer <key>` and throttled per key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.validators import RegexValidator, validate_slug
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from signaldash.permissions import CanTrack
from tracking.assign_validation import plain_assign
from tracking.assignment import REASONS
from tracking.auth import APIKeyAuthentication
from tracking.fast_batch import batch_decode, event_decode
from tracking.fast_validation import plain_event
from tracking.fields import (
    EVENT_ID_RE,
    PROPS_MAX_BYTES,
    PROPS_MAX_DEPTH,
    USER_KEY_MESSAGE,
    USER_KEY_RE,
    AttributesField,
    CovariatesField,
    PropsField,
    SlugListField,
    StrictCharField,
    StrictChoiceField,
    StrictDateTimeField,
    StrictNumberField,
)
from tracking.models import Event
from tracking.parsers import LimitedJSONParser, RequestTooLarge, plain_json_body
from tracking.request_log import api_request_log, request_id
from tracking.services import (
    AssignmentResult,
    EventIn,
    EventResult,
    ExperimentHasNoVariants,
    ExperimentNotFound,
    ExperimentNotRunning,
    Outcome,
    assignment_get_or_create,
    assignment_rules_published,
    assignments_get_or_create_all,
    event_ingest,
    events_ingest,
    events_ingest_plain,
)
from tracking.throttling import APIKeyRateThrottle

TRACK_MAX_BODY_BYTES = 64 * 1024  # one event: 8 KB of props plus the fields, with room to spare
BATCH_MAX_EVENTS = 1000
FUTURE_TOLERANCE_S = 5 * 60


# --- Errors and the request log -------------------------------------------------------------------
def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """400s as `{"errors": {field: [messages]}}`; every other error as `{"error": code, "detail": text}`."""
    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
        response.data = {"errors": detail}
    elif isinstance(exc, exceptions.ParseError):
        response.data = {"errors": {api_settings.NON_FIELD_ERRORS_KEY: [str(exc.detail)]}}
    elif isinstance(exc, exceptions.APIException):
        response.data = {"error": exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code}
        response.data["detail"] = str(exc.detail)
    return response


def _outcome(response: HttpResponse, view_outcome: str | None) -> str:
    if view_outcome:
        return view_outcome
    data = getattr(response, "data", None)
    if isinstance(data, Mapping):
        if "error" in data:
            return str(data["error"])
        if "errors" in data:
            return "invalid"
    return f"http_{response.status_code}"


class AsciiJSONRenderer(JSONRenderer):
    """Escapes non-ASCII, so error messages that echo client input (even a lone surrogate) always render."""

    ensure_ascii = True


_RENDERER = AsciiJSONRenderer()


def rendered(request, body: Any, code: int) -> HttpResponse:
    """`Response(body, status=code)` as DRF and Django render it for a service view — the one renderer, the
    media type it was accepted with (an `indent` parameter included) — built directly, without the template
    response's rendering machinery. The hot endpoints' answers (tests/tracking/test_service_middleware.py)."""
    response = HttpResponse(
        _RENDERER.render(body, request.accepted_media_type), status=code, content_type=_RENDERER.media_type
    )
    response.data = body  # what the request log's outcome reads (`_outcome`), as on a DRF Response
    return response


# The rules the serializers enforce across fields, stated in the schema: exposures name no metric,
# conversions carry no covariates ("not a string/object" on a nullable property: absent or null;
# "not the other type" rather than an inline enum, which drf-spectacular would hoist into a component).
EVENT_TYPE_RULES = [
    {"properties": {"event_type": {"not": {"enum": ["conversion"]}}, "metric": {"not": {"type": "string"}}}},
    {"properties": {"event_type": {"not": {"enum": ["exposure"]}}, "covariates": {"not": {"type": "object"}}}},
]


class ServiceAutoSchema(AutoSchema):
    """The schema says what the serializers enforce: unknown keys refused, and the event-type rules."""

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, RejectUnknownFieldsMixin):
            schema["additionalProperties"] = False
        if isinstance(serializer, EventInputSerializer):
            schema["anyOf"] = EVENT_TYPE_RULES
        return schema


class PlainAcceptNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, without parsing the Accept header of the common request: one renderer, no format
    override, and Accept absent, `*/*` or the renderer's own media type (what DRF then picks too)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        if (
            len(renderers) == 1
            and accept in ("*/*", renderers[0].media_type)
            and not format_suffix
            and self.settings.URL_FORMAT_OVERRIDE not in request.GET
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


class ServiceAPIView(APIView):
    """Base of the service-to-service endpoints: API key auth, per-key throttle, strict JSON, one log line."""

    schema = ServiceAutoSchema()

    authentication_classes = [APIKeyAuthentication]
    permission_classes = [CanTrack]  # an API key with the `track` scope
    throttle_classes = [APIKeyRateThrottle]
    parser_classes = [LimitedJSONParser]
    renderer_classes = [AsciiJSONRenderer]
    content_negotiation_class = PlainAcceptNegotiation
    max_body_bytes: int | None = None  # None: DATA_UPLOAD_MAX_MEMORY_SIZE
    log_outcome: str | None = None
    log_extra: dict[str, Any] | None = None

    def get_exception_handler(self):
        return api_exception_handler

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        rid = request_id(request)
        response = super().dispatch(request, *args, **kwargs)
        api_request_log(
            request,
            response,
            request_id=rid,
            started=started,
            outcome=_outcome(response, self.log_outcome),
            **(self.log_extra or {}),
        )
        return response


# --- Shared serializers ---------------------------------------------------------------------------
class RejectUnknownFieldsMixin:
    """Unknown keys are a 400 (a typo must not be silently dropped)."""

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, Mapping) else []
        errors: dict[str, Any] = {name: ["Unknown field."] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not errors:
                raise
            errors.update(exc.detail)
        if errors:
            raise serializers.ValidationError(errors)
        return value


@extend_schema_serializer(component_name="TrackEvent")
class EventInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    experiment = StrictCharField(min_length=1, max_length=100, help_text="Experiment slug.")
    variant = StrictCharField(min_length=1, max_length=64, help_text="Variant key of that experiment.")
    user_key = StrictCharField(
        min_length=1,
        max_length=255,
        validators=[RegexValidator(USER_KEY_RE, USER_KEY_MESSAGE)],
        help_text="Your stable id of the user (1–255 chars, no leading or trailing whitespace).",
    )
    event_type = StrictChoiceField(choices=Event.EventType.choices)
    metric = StrictCharField(
        max_length=100,
        required=False,
        allow_null=True,
        validators=[validate_slug],
        help_text="Conversions only; default: the experiment's primary metric.",
    )
    value = StrictNumberField(required=False, allow_null=True, help_text="Optional numeric value.")
    occurred_at = StrictDateTimeField(
        required=False, allow_null=True, help_text="ISO 8601; default now; at most 5 minutes in the future."
    )
    props = PropsField(
        required=False,
        allow_null=True,
        help_text=f"JSON object, at most {PROPS_MAX_BYTES} bytes as compact UTF-8 JSON and at most "
        f"{PROPS_MAX_DEPTH} levels of nested objects/arrays (the object itself is level 1).",
    )
    event_id = StrictCharField(
        min_length=1,
        max_length=100,
        required=False,
        allow_null=True,
        validators=[RegexValidator(EVENT_ID_RE, "Must be 1–100 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'.")],
        help_text=(
            "Optional id of this event, unique within the experiment; retries of the same event must reuse it. "
            "A conversion with an event_id is deduplicated on it (a user may have several conversions on one "
            "metric); without one, on (user, metric). An exposure is always one per user. A repeated event_id "
            "is a duplicate even if the rest of the event differs."
        ),
    )
    covariates = CovariatesField(required=False, allow_null=True)

    def validate_occurred_at(self, value):
        if value is not None and (value - timezone.now()).total_seconds() > FUTURE_TOLERANCE_S:
            raise serializers.ValidationError("Must not be more than 5 minutes in the future.")
        return value

    def validate(self, attrs):
        if attrs["event_type"] == Event.EventType.EXPOSURE and attrs.get("metric") is not None:
            raise serializers.ValidationError({"metric": ["Only conversions have a metric."]})
        if attrs["event_type"] != Event.EventType.EXPOSURE and attrs.get("covariates") is not None:
            raise serializers.ValidationError({"covariates": ["Only exposures have covariates."]})
        return attrs

    @staticmethod
    def to_event(data: dict[str, Any], now: datetime | None = None) -> EventIn:
        return EventIn(
            experiment=data["experiment"],
            variant=data["variant"],
            user_key=data["user_key"],
            event_type=data["event_type"],
            metric=data.get("metric"),
            value=data.get("value"),
            occurred_at=data.get("occurred_at") or now or timezone.now(),
            props=data.get("props") or {},
            event_id=data.get("event_id"),
            covariates=data.get("covariates") or {},
        )


def event_validate(data: Any, now: datetime | None = None) -> EventIn:
    """The one validator of an event, for `/api/track` bodies and every batch item alike.

    Raises `ValidationError` whose detail is always `{field: [messages]}` (a body or item that is not a
    JSON object, `null` included, is `{"non_field_errors": ["Must be a JSON object."]}`).
    """
    if not isinstance(data, Mapping):
        raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: ["Must be a JSON object."]})
    serializer = EventInputSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return EventInputSerializer.to_event(serializer.validated_data, now)


_ERROR_FIELD = {
    Outcome.EXPERIMENT_NOT_FOUND: "experiment",
    Outcome.EXPERIMENT_NOT_RUNNING: "experiment",
    Outcome.UNKNOWN_VARIANT: "variant",
    Outcome.VARIANT_CONFLICT: "variant",
    Outcome.VALUE_REQUIRED: "value",
    Outcome.UNKNOWN_METRIC: "metric",
    Outcome.OCCURRED_BEFORE_START: "occurred_at",
}
# Rejections caused by the event's content, judged against the experiment: 400 on /api/track.
_INPUT_OUTCOMES = frozenset(
    {Outcome.UNKNOWN_VARIANT, Outcome.VALUE_REQUIRED, Outcome.UNKNOWN_METRIC, Outcome.OCCURRED_BEFORE_START}
)


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField(required=False)


class ValidationErrorSerializer(serializers.Serializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Field name (or `non_field_errors`) → messages.",
    )


@extend_schema_serializer(component_name="TrackValidationError")
class TrackValidationErrorSerializer(ValidationErrorSerializer):
    error = serializers.ChoiceField(
        choices=[o.value for o in sorted(_INPUT_OUTCOMES)],
        required=False,
        help_text="Present when the event is well-formed but wrong for its experiment: `unknown_variant`, "
        "`unknown_metric` (the experiment has a metric plan that does not name it), `value_required` (a mean "
        "metric's conversion without `value`), `occurred_before_start` (more than 5 minutes before the "
        "experiment started).",
    )


def _error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    described = {
        400: OpenApiResponse(ValidationErrorSerializer, description="Invalid input: `{errors: {field: [messages]}}`."),
        401: OpenApiResponse(ErrorSerializer, description="Missing, invalid or revoked API key."),
        403: OpenApiResponse(ErrorSerializer, description="The API key lacks the `track` scope (`permission_denied`)."),
        411: OpenApiResponse(ErrorSerializer, description="Body sent without Content-Length (`length_required`)."),
        415: OpenApiResponse(
            ErrorSerializer,
            description="Not JSON, or a charset that is not a text encoding (`unsupported_media_type`).",
        ),
        503: OpenApiResponse(
            ErrorSerializer, description="Database unavailable (`database_unavailable`); see `Retry-After`."
        ),
        404: OpenApiResponse(ErrorSerializer, description="Unknown experiment (`experiment_not_found`)."),
        413: OpenApiResponse(ErrorSerializer, description="Request body too large."),
        429: OpenApiResponse(ErrorSerializer, description="Throttled; see the `Retry-After` header."),
    }
    return {code: described[code] for code in codes}


EVENT_EXAMPLE = {
    "experiment": "checkout-button",
    "variant": "treatment",
    "user_key": "user-42",
    "event_type": "conversion",
    "metric": "purchase",
    "value": 19.99,
    "occurred_at": "2026-01-01T12:00:00Z",
    "props": {"plan": "pro"},
}


# --- Views ----------------------------------------------------------------------------------------
class TrackApi(ServiceAPIView):
    """Record one event. Repeats (same experiment, user, event type and metric) are stored once."""

    max_body_bytes = TRACK_MAX_BODY_BYTES

    InputSerializer = EventInputSerializer  # shared with the batch endpoint

    @extend_schema_serializer(component_name="TrackResult")
    class OutputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=["created", "duplicate"])
        duplicate = serializers.BooleanField()

    @extend_schema(
        operation_id="track_event",
        summary="Record one exposure or conversion",
        request=InputSerializer,
        responses={
            201: OpenApiResponse(OutputSerializer, description="Stored."),
            200: OpenApiResponse(OutputSerializer, description="A repeat of a stored event (not stored again)."),
            400: OpenApiResponse(
                TrackValidationErrorSerializer,
                description="Invalid event: `{errors: {field: [messages]}}`, with `error` when the event is "
                "well-formed but wrong for its experiment.",
            ),
            409: OpenApiResponse(
                ErrorSerializer,
                description="`experiment_not_running`, or `variant_conflict` (user in another variant).",
            ),
            **_error_responses(401, 403, 404, 411, 413, 415, 429, 503),
        },
        examples=[
            OpenApiExample("Conversion", EVENT_EXAMPLE, request_only=True),
            OpenApiExample(
                "Created", {"status": "created", "duplicate": False}, response_only=True, status_codes=[201]
            ),
            OpenApiExample(
                "Duplicate", {"status": "duplicate", "duplicate": True}, response_only=True, status_codes=[200]
            ),
            OpenApiExample("Conflict", {"error": "variant_conflict"}, response_only=True, status_codes=[409]),
        ],
    )
    def post(self, request):
        # The plainly valid body (the common case) is decoded by msgspec and skips the serializer; anything else
        # is parsed as before and judged by the serializer.
        now = timezone.now()
        body = plain_json_body(request, self.max_body_bytes)
        event = event_decode(body, now) if body is not None else None
        if event is None:
            data = request.data
            event = plain_event(data, now) or event_validate(data)
        result = event_ingest(event=event)
        self.log_outcome = result.outcome.value
        return self._response(request, result)

    # What OutputSerializer renders for the two stored outcomes (pinned by the tracking tests).
    _STORED = {
        Outcome.CREATED: ({"status": "created", "duplicate": False}, status.HTTP_201_CREATED),
        Outcome.DUPLICATE: ({"status": "duplicate", "duplicate": True}, status.HTTP_200_OK),
    }

    def _response(self, request, result: EventResult) -> HttpResponse:
        if result.outcome.stored:
            body, code = self._STORED[result.outcome]
            return rendered(request, body, code)
        if result.outcome in _INPUT_OUTCOMES:
            body = {"errors": {_ERROR_FIELD[result.outcome]: [result.detail]}, "error": result.outcome.value}
            return rendered(request, body, status.HTTP_400_BAD_REQUEST)
        code = status.HTTP_404_NOT_FOUND if result.outcome == Outcome.EXPERIMENT_NOT_FOUND else status.HTTP_409_CONFLICT
        return rendered(request, {"error": result.outcome.value, "detail": result.detail}, code)


@extend_schema_field(EventInputSerializer)
class _AnyJSON(serializers.Field):
    """Each batch item is validated on its own (per-index errors), so the envelope passes it through
    (`null` included: a malformed item is that item's error, never the whole batch's)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


class TrackBatchApi(ServiceAPIView):
    """Record up to 1000 events in one request; each is accepted, a duplicate, or rejected with its index."""

    @extend_schema_serializer(component_name="TrackBatch")
    class InputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
        events = serializers.ListField(
            child=_AnyJSON(), max_length=BATCH_MAX_EVENTS, help_text=f"Up to {BATCH_MAX_EVENTS} events."
        )

    @extend_schema_serializer(component_name="TrackBatchResult")
    class OutputSerializer(serializers.Serializer):
        class RejectedSerializer(serializers.Serializer):
            index = serializers.IntegerField(help_text="Position of the item in `events` (0-based).")
            errors = serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                help_text="Field name (or `non_field_errors`) → messages, as `/api/track` would answer.",
            )
            error = serializers.ChoiceField(
                choices=["invalid", *_ERROR_FIELD],
                help_text="`invalid`: the item fails validation (what `/api/track` answers with 400). Otherwise "
                "what `/api/track` answers with 400, 404 or 409 for it.",
            )

        accepted = serializers.IntegerField(help_text="Events newly stored.")
        duplicates = serializers.IntegerField(help_text="Repeats of stored events or of earlier events in the batch.")
        rejected = RejectedSerializer(many=True)

    @extend_schema(
        operation_id="track_batch",
        summary="Record up to 1000 events; valid ones are stored even if others are rejected",
        request=InputSerializer,
        responses={
            200: OpenApiResponse(
                OutputSerializer,
                description="Every item accounted for: stored (`accepted`), a repeat (`duplicates`), or rejected "
                "with its index, its field errors and an `error` code.",
            ),
            400: OpenApiResponse(
                ValidationErrorSerializer,
                description="Invalid envelope (not an object, `events` missing or not a list, over "
                f"{BATCH_MAX_EVENTS} items, unknown keys): `{{errors: {{field: [messages]}}}}`. Items are never "
                "a reason for a 400: each is judged on its own.",
            ),
            **_error_responses(401, 403, 411, 413, 415, 429, 503),
        },
        examples=[
            OpenApiExample(
                "Two events", {"events": [EVENT_EXAMPLE, {**EVENT_EXAMPLE, "user_key": "user-43"}]}, request_only=True
            ),
            OpenApiExample(
                "Partly rejected",
                {"accepted": 1, "duplicates": 0, "rejected": [{"index": 1, "errors": {"user_key": ["Required."]}}]},
                response_only=True,
                status_codes=[200],
            ),
        ],
    )
    def post(self, request):
        now = timezone.now()
        body = plain_json_body(request, self.max_body_bytes)
        plain = batch_decode(body, now) if body is not None else None
        if plain is not None:  # every event plainly valid: decoded by msgspec, stored from columns
            results = events_ingest_plain(events=plain)
            return self._answer(len(plain), range(len(plain)), results, [])
        envelope = self.InputSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        items = envelope.validated_data["events"]
        valid: list[tuple[int, EventIn]] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            plain = plain_event(item, now)
            if plain is not None:
                valid.append((index, plain))
                continue
            try:
                valid.append((index, event_validate(item, now)))
            except serializers.ValidationError as exc:
                rejected.append({"index": index, "errors": exc.detail, "error": "invalid"})
        results = events_ingest(events=[event for _, event in valid])
        return self._answer(len(items), [index for index, _ in valid], results, rejected)

    def _answer(
        self, count: int, indexes: Sequence[int], results: Sequence[EventResult], rejected: list[dict[str, Any]]
    ) -> Response:
        """The answer for `count` items: `results` of the items at `indexes`, plus the items already `rejected`.
        The plain JSON that OutputSerializer renders (its fields are plain ints and lists of dicts of strings)."""
        outcomes = [r.outcome for r in results]
        accepted, duplicates = outcomes.count(Outcome.CREATED), outcomes.count(Outcome.DUPLICATE)
        if accepted + duplicates < len(outcomes):
            for index, result in zip(indexes, results, strict=True):
                if not result.outcome.stored:
                    field = _ERROR_FIELD[result.outcome]
                    rejected.append({"index": index, "errors": {field: [result.detail]}, "error": result.outcome.value})
        rejected.sort(key=lambda r: r["index"])
        self.log_outcome = "accepted" if not rejected else "partially_rejected"
        self.log_extra = {"events": count, "accepted": accepted, "duplicates": duplicates, "rejected": len(rejected)}
        body = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
        return Response(self.OutputSerializer(body).data, status=status.HTTP_200_OK)


REASON_HELP = (
    "`assigned` (enrolled: `variant` is set and stored), or why not: `not_targeted` (the targeting condition "
    "does not match the attributes), `in_holdout` (held out by the experiment's holdout), `outside_layer_range`, "
    "`outside_coverage`. See docs/assignment.md."
)
ASSIGN_ALL_MAX_EXPERIMENTS = 200


def _user_key_field() -> StrictCharField:
    return StrictCharField(min_length=1, max_length=255, validators=[RegexValidator(USER_KEY_RE, USER_KEY_MESSAGE)])


def _attributes_field() -> AttributesField:
    return AttributesField(
        required=False,
        allow_null=True,
        help_text=f"User attributes for targeting: a JSON object, at most {PROPS_MAX_BYTES} bytes and "
        f"{PROPS_MAX_DEPTH} levels deep (like `props`). Never stored: a stored assignment wins over later attributes.",
    )


# The answers are built as plain JSON values (str, None, bool and DRF's own datetime spelling), exactly what
# the OutputSerializers below render (tests/assignment/test_api_bodies.py proves it), without their cost per
# field and item: for 50 experiments the serializer cost more than evaluating them. The serializers stay the
# schema of record.
_ASSIGNED_AT = serializers.DateTimeField()


def _validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """The serializer's validated data, or its 400 (every body `plain_assign` is not sure about)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def assign_body(result: AssignmentResult) -> dict[str, Any]:
    """`AssignApi.OutputSerializer(…).data` of one answer."""
    at = result.assigned_at
    return {
        "variant": result.variant,
        "assigned_at": _ASSIGNED_AT.to_representation(at) if at is not None else None,
        "new": result.new,
        "in_experiment": result.in_experiment,
        "reason": result.reason,
    }


def assign_all_body(results: Sequence[AssignmentResult]) -> dict[str, Any]:
    """`AssignAllApi.OutputSerializer(…).data` of the answers."""
    return {
        "assignments": [
            {
                "experiment": r.experiment,
                "variant": r.variant,
                "in_experiment": r.in_experiment,
                "reason": r.reason,
                "new": r.new,
            }
            for r in results
        ]
    }


class AssignApi(ServiceAPIView):
    """Assign a user to a variant by the experiment's rules (docs/assignment.md); an enrolment is stored once."""

    @extend_schema_serializer(component_name="AssignRequest")
    class InputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
        experiment = StrictCharField(min_length=1, max_length=100)
        user_key = _user_key_field()
        attributes = _attributes_field()

    @extend_schema_serializer(component_name="Assignment")
    class OutputSerializer(serializers.Serializer):
        variant = serializers.CharField(allow_null=True, help_text="null when the user is not enrolled.")
        assigned_at = serializers.DateTimeField(allow_null=True, help_text="null when the user is not enrolled.")
        new = serializers.BooleanField(help_text="True when this call made the assignment.")
        in_experiment = serializers.BooleanField(help_text="True when the user is enrolled (has a variant).")
        reason = serializers.ChoiceField(choices=list(REASONS), help_text=REASON_HELP)

    @extend_schema(
        operation_id="assign",
        summary="The user's variant: stored, or decided now by targeting, holdout, layer, coverage and weights",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="`experiment_not_running` or `experiment_has_no_variants`."
            ),
            **_error_responses(400, 401, 403, 404, 411, 413, 415, 429, 503),
        },
        examples=[
            OpenApiExample(
                "Assign",
                {"experiment": "checkout-button", "user_key": "user-42", "attributes": {"country": "DE"}},
                request_only=True,
            ),
            OpenApiExample(
                "Assigned",
                {
                    "variant": "treatment",
                    "assigned_at": "2026-01-01T12:00:00Z",
                    "new": True,
                    "in_experiment": True,
                    "reason": "assigned",
                },
                response_only=True,
                status_codes=[200],
            ),
            OpenApiExample(
                "Not targeted",
                {"variant": None, "assigned_at": None, "new": False, "in_experiment": False, "reason": "not_targeted"},
                response_only=True,
                status_codes=[200],
            ),
        ],
    )
    def post(self, request):
        data = plain_assign(request.data, single=True) or _validated(self.InputSerializer, request.data)
        try:
            result = assignment_get_or_create(
                experiment_slug=data["experiment"], user_key=data["user_key"], attributes=data.get("attributes") or {}
            )
        except ExperimentNotFound:
            return rendered(request, {"error": "experiment_not_found"}, status.HTTP_404_NOT_FOUND)
        except ExperimentNotRunning:
            return rendered(request, {"error": "experiment_not_running"}, status.HTTP_409_CONFLICT)
        except ExperimentHasNoVariants:
            return rendered(request, {"error": "experiment_has_no_variants"}, status.HTTP_409_CONFLICT)
        self.log_outcome = ("assigned" if result.new else "existing") if result.in_experiment else result.reason
        return rendered(request, assign_body(result), status.HTTP_200_OK)


class AssignAllApi(ServiceAPIView):
    """Every running experiment's answer for one user (or the listed experiments'), in one request."""

    @extend_schema_serializer(component_name="AssignAllRequest")
    class InputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
        user_key = _user_key_field()
        attributes = _attributes_field()
        experiments = SlugListField(
            required=False,
            allow_null=True,
            max_items=ASSIGN_ALL_MAX_EXPERIMENTS,
            help_text=f"Experiment slugs (at most {ASSIGN_ALL_MAX_EXPERIMENTS}); default: every running "
            "experiment. Listed experiments that are not running are left out of the answer.",
        )

    @extend_schema_serializer(component_name="AssignAllResult")
    class OutputSerializer(serializers.Serializer):
        class ItemSerializer(serializers.Serializer):
            experiment = serializers.CharField()
            variant = serializers.CharField(allow_null=True)
            in_experiment = serializers.BooleanField()
            reason = serializers.ChoiceField(choices=list(REASONS), help_text=REASON_HELP)
            new = serializers.BooleanField(help_text="True when this call made the assignment.")

        assignments = ItemSerializer(many=True, help_text="One per running experiment asked about, by slug.")

    @extend_schema(
        operation_id="assign_all",
        summary="Every running experiment's answer for one user, in one request",
        request=InputSerializer,
        responses={200: OutputSerializer, **_error_responses(400, 401, 403, 411, 413, 415, 429, 503)},
        examples=[
            OpenApiExample(
                "All running",
                {"user_key": "user-42", "attributes": {"country": "DE", "app_version": "2.10.0"}},
                request_only=True,
            )
        ],
    )
    def post(self, request):
        data = plain_assign(request.data, single=False) or _validated(self.InputSerializer, request.data)
        results = assignments_get_or_create_all(
            user_key=data["user_key"], attributes=data.get("attributes") or {}, experiment_slugs=data.get("experiments")
        )
        self.log_extra = {"experiments": len(results)}
        return Response(assign_all_body(results), status=status.HTTP_200_OK)


class AssignRulesApi(ServiceAPIView):
    """The published rules of every running experiment, for evaluating assignments locally (docs/assignment.md)."""

    @extend_schema_serializer(component_name="AssignRules")
    class OutputSerializer(serializers.Serializer):
        class RuleSerializer(serializers.Serializer):
            class RuleVariantSerializer(serializers.Serializer):
                key = serializers.CharField()
                weight = serializers.IntegerField()
                is_control = serializers.BooleanField()

            class LayerSerializer(serializers.Serializer):
                key = serializers.CharField()
                salt = serializers.CharField()
                start = serializers.FloatField()
                end = serializers.FloatField()

            experiment = serializers.CharField()
            salt = serializers.CharField()
            variants = RuleVariantSerializer(many=True)
            coverage = serializers.FloatField()
            targeting = serializers.DictField(help_text="GrowthBook condition; {} matches everyone.")
            layer = LayerSerializer(allow_null=True)
            holdout = serializers.CharField(allow_null=True, help_text="The holdout experiment's slug.")

        algorithm = serializers.CharField(help_text="The algorithm's version (docs/assignment.md).")
        experiments = RuleSerializer(many=True)

    @extend_schema(
        operation_id="assign_rules",
        summary="Every running experiment's assignment rules, with an ETag (304 on If-None-Match)",
        responses={
            200: OutputSerializer,
            304: OpenApiResponse(description="Not modified: the rules still have the ETag sent in If-None-Match."),
            **_error_responses(401, 403, 429, 503),
        },
    )
    def get(self, request):
        body, etag = assignment_rules_published()
        quoted = f'"{etag}"'
        sent = [tag.strip().removeprefix("W/") for tag in request.headers.get("If-None-Match", "").split(",")]
        if quoted in sent or "*" in sent:
            self.log_outcome = "not_modified"
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
        else:
            response = Response(body, status=status.HTTP_200_OK)
        response["ETag"] = quoted
        response["Cache-Control"] = "private, no-cache"
        return response
