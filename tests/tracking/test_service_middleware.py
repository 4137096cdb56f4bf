"""The service API without the browser middleware (signaldash.middleware.ServiceAPIMiddleware) answers exactly as
the whole middleware chain does: the same status, the same headers in the same order, the same bytes; and the
hot endpoints' directly rendered answers (tracking.api.rendered) are DRF's rendering of the same body."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.test import Client, override_settings
from rest_framework import status
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory

from tests.tracking.conftest import event, make_experiment
from tracking import api as tracking_api
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db

LANE = "signaldash.middleware.ServiceAPIMiddleware"
REQUEST_ID = "req-equivalence-1"


def _client(key: str | None) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}") if key else Client()


def _send(key: str | None, method: str, path: str, body=None, *, cookie: str | None = None, **extra):
    client = _client(key)
    if cookie:
        client.cookies.load(cookie)
    data = json.dumps(body) if body is not None else None
    kwargs = {"content_type": "application/json"} if data is not None else {}
    response = getattr(client, method)(path, data, HTTP_X_REQUEST_ID=REQUEST_ID, **kwargs, **extra)
    return response


def _seen(response) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a client sees: status, headers in order, body."""
    return response.status_code, list(response.items()), response.content


def _through_whole_chain(key, method, path, body=None, **extra):
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != LANE]):
        return _send(key, method, path, body, **extra)


def _took_lane(response) -> bool:
    return not hasattr(response.wsgi_request, "session")  # SessionMiddleware gives every request it sees one


@pytest.fixture
def keys(make_user):
    make_experiment(make_user("owner"))
    track = ServiceAPIKey.objects.create_key(name="svc")[1]
    read_only = ServiceAPIKey.objects.create_key(name="reader", scopes="read")[1]
    return {"track": track, "read": read_only, "bad": "nope.nope", "none": None}


CASES = [
    # (case id, key, method, path, body for the lane, body for the whole chain)
    ("track_created", "track", "post", "/api/track", event(user_key="lane-1"), event(user_key="chain-1")),
    ("track_invalid", "track", "post", "/api/track", event(user_key=" x", variant=5), event(user_key=" x", variant=5)),
    ("track_unknown_experiment", "track", "post", "/api/track", event(experiment="nope"), event(experiment="nope")),
    ("track_unknown_variant", "track", "post", "/api/track", event(variant="blue"), event(variant="blue")),
    ("track_not_json", "track", "post", "/api/track", "not an object", "not an object"),
    ("track_no_key", "none", "post", "/api/track", event(), event()),
    ("track_bad_key", "bad", "post", "/api/track", event(), event()),
    ("track_read_scope", "read", "post", "/api/track", event(), event()),
    ("track_get", "track", "get", "/api/track", None, None),
    (
        "batch",
        "track",
        "post",
        "/api/track/batch",
        {"events": [event(user_key="lane-b"), event(user_key=" bad")]},
        {"events": [event(user_key="chain-b"), event(user_key=" bad")]},
    ),
    ("assign_unknown", "track", "post", "/api/assign", {"experiment": "x", "user_key": "u"}, None),
    ("assign_invalid", "track", "post", "/api/assign", {"experiment": "checkout", "user_key": ""}, None),
    ("assign_all", "track", "post", "/api/assign/all", {"user_key": "all-1", "experiments": ["nope"]}, None),
    ("assign_rules", "track", "get", "/api/assign/rules", None, None),
]


@pytest.mark.parametrize(("case", "key", "method", "path", "lane_body", "chain_body"), CASES, ids=[c[0] for c in CASES])
def test_service_lane__any_answer__identical_to_the_whole_chain(keys, case, key, method, path, lane_body, chain_body):
    # Given the same request (an equivalent one where storing it changes the answer) twice
    chain_body = lane_body if chain_body is None else chain_body
    # When one takes the service lane and the other the whole middleware chain
    lane = _send(keys[key], method, path, lane_body)
    chain = _through_whole_chain(keys[key], method, path, chain_body)
    # Then the client sees the same status, headers (in order) and bytes
    assert _took_lane(lane) and not _took_lane(chain)
    assert _seen(lane) == _seen(chain)
    assert ("X-Frame-Options", "DENY") in lane.items() and ("Vary", "Cookie") in lane.items()


def test_service_lane__duplicate_event_and_stored_assignment__identical_to_the_whole_chain(keys):
    # Given an event and an assignment already stored
    _send(keys["track"], "post", "/api/track", event(user_key="twice"))
    _send(keys["track"], "post", "/api/assign", {"experiment": "checkout", "user_key": "twice-a"})
    for path, body in (
        ("/api/track", event(user_key="twice")),
        ("/api/assign", {"experiment": "checkout", "user_key": "twice-a"}),
    ):
        # When both ways send them again
        lane = _send(keys["track"], "post", path, body)
        chain = _through_whole_chain(keys["track"], "post", path, body)
        # Then the answers (a duplicate; the stored assignment) are the same bytes
        assert _took_lane(lane)
        assert _seen(lane) == _seen(chain)
        assert lane.status_code == status.HTTP_200_OK


def test_service_lane__new_assignment__same_answer_but_its_time_and_variant(keys):
    lane = _send(keys["track"], "post", "/api/assign", {"experiment": "checkout", "user_key": "new-lane"})
    chain = _through_whole_chain(
        keys["track"], "post", "/api/assign", {"experiment": "checkout", "user_key": "new-chain"}
    )
    stamp = re.compile(rb'"(assigned_at|variant)":"[^"]+"')  # the users' times and (hashed) variants differ
    assert _took_lane(lane) and lane.json()["new"] is True
    assert stamp.sub(b"", lane.content) == stamp.sub(b"", chain.content)
    assert [h for h in lane.items() if h[0] != "Content-Length"] == [
        h for h in chain.items() if h[0] != "Content-Length"
    ]


def test_service_lane__indent_in_accept__rendered_like_drf(keys):
    body = event(user_key="indent", variant="blue")
    lane = _send(keys["track"], "post", "/api/track", body, HTTP_ACCEPT="application/json; indent=4")
    chain = _through_whole_chain(keys["track"], "post", "/api/track", body, HTTP_ACCEPT="application/json; indent=4")
    assert b'\n    "errors"' in lane.content
    assert _seen(lane) == _seen(chain)


def test_service_lane__database_down__same_503_as_the_whole_chain(keys):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    with connection.execute_wrapper(refuse):
        lane = _send(keys["track"], "post", "/api/track", event(user_key="down"))
        chain = _through_whole_chain(keys["track"], "post", "/api/track", event(user_key="down"))
    assert lane.status_code == 503 and lane.json()["error"] == "database_unavailable"
    assert _seen(lane) == _seen(chain)


def test_service_lane__view_raises__same_500_as_the_whole_chain(keys, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tracking_api, "event_ingest", broken)
    lane_client, chain_settings = _client(keys["track"]), [m for m in settings.MIDDLEWARE if m != LANE]
    lane_client.raise_request_exception = False
    lane = lane_client.post(
        "/api/track", json.dumps(event()), content_type="application/json", HTTP_X_REQUEST_ID=REQUEST_ID
    )
    with override_settings(MIDDLEWARE=chain_settings):
        chain_client = _client(keys["track"])
        chain_client.raise_request_exception = False
        chain = chain_client.post(
            "/api/track", json.dumps(event()), content_type="application/json", HTTP_X_REQUEST_ID=REQUEST_ID
        )
    assert lane.status_code == 500
    assert _took_lane(lane)
    assert _seen(lane) == _seen(chain)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"cookie": "sessionid=abc"}, "a cookie"),
        ({"cookie": "unrelated=1"}, "any cookie"),
        ({"HTTP_HOST": "evil.example"}, "a Host that is not allowed"),
    ],
)
def test_service_lane__cookie_or_refused_host__whole_chain_answers(keys, extra, why):
    lane = _send(keys["track"], "post", "/api/track", event(user_key="cookie-1"), **extra)
    chain = _through_whole_chain(keys["track"], "post", "/api/track", event(user_key="cookie-2"), **extra)
    assert not _took_lane(lane), why
    assert _seen(lane) == _seen(chain)


def test_service_lane__pages_and_other_api__whole_chain(keys):
    assert not _took_lane(_send(None, "get", "/healthz"))
    assert not _took_lane(_send(keys["track"], "get", "/api/schema/"))
    assert not _took_lane(_send(None, "get", "/api/docs/"))


BODIES = [
    {"status": "created", "duplicate": False},
    {"errors": {"user_key": ["Ungültig ☃ \ud800"]}, "error": "unknown_variant"},
    {"variant": None, "assigned_at": None, "new": False, "in_experiment": False, "reason": "not_targeted"},
    {"nested": [1, 2.5, {"a": [True, None]}]},
]


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/json; indent=2"])
@pytest.mark.parametrize("body", BODIES)
def test_rendered__any_body__drf_response_bytes_and_headers(body, accept):
    # Given a service view answering one body as a DRF Response, and the same body rendered directly
    class Both(tracking_api.ServiceAPIView):
        authentication_classes: list = []
        permission_classes: list = []
        throttle_classes: list = []
        direct = False

        def post(self, request):
            if self.direct:
                return tracking_api.rendered(request, body, status.HTTP_201_CREATED)
            return Response(body, status=status.HTTP_201_CREATED)

    factory = APIRequestFactory()

    def answer(direct: bool):
        request = factory.post("/x", b"{}", content_type="application/json", HTTP_ACCEPT=accept, HTTP_X_REQUEST_ID="r")
        response = Both.as_view(direct=direct)(request)
        response = response.render() if hasattr(response, "render") else response
        return response.status_code, list(response.items()), response.content

    # Then both give the same status, headers and bytes
    assert answer(True) == answer(False)
