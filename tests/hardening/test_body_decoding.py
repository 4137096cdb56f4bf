"""Request bodies: only text charsets are decoded (415), nesting is bounded without recursion (400),
form posts must be UTF-8 (415, was a 500 on the login form), and chunked bodies get 411."""

from __future__ import annotations

import bz2
import codecs
import io
import json
import zlib
from unittest import mock

import pytest
from django.test import Client
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.test import APIClient

from tests.tracking.conftest import make_experiment
from tracking.models import Event, ServiceAPIKey
from tracking.parsers import MAX_JSON_DEPTH, LimitedJSONParser, json_depth_exceeds

EVENT = {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure"}
NOT_TEXT = ["bz2", "zlib", "base64", "hex", "rot13", "uu", "quopri", "idna", "unicode_escape", "no-such-codec"]


@pytest.fixture
def api(db, make_user):
    make_experiment(make_user("owner"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ServiceAPIKey.objects.create_key(name='svc')[1]}")
    return client


def _parse(body: bytes, content_type: str):
    return LimitedJSONParser().parse(io.BytesIO(body), content_type, {})


# --- The parser on its own ------------------------------------------------------------------------
@pytest.mark.parametrize("charset", NOT_TEXT)
def test_parser__non_text_charset__unsupported_media_type_without_decoding(charset):
    # Given a body compressed with a bytes-to-bytes codec (a decompression bomb in the making)
    body = bz2.compress(json.dumps(EVENT).encode())
    # When it is parsed under that declared charset, then it is refused and no codec runs
    with mock.patch.object(codecs, "decode", side_effect=AssertionError("decoded")):
        with pytest.raises(UnsupportedMediaType):
            _parse(body, f"application/json; charset={charset}")


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "utf-16", "utf-16-le", "utf-32", "ascii", "latin-1"])
def test_parser__text_charset__decoded(charset):
    assert _parse(json.dumps(EVENT).encode(charset), f"application/json; charset={charset}") == EVENT


def test_parser__depth_at_limit__parsed_one_more__400():
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert _parse(at_limit.encode(), "application/json") == json.loads(at_limit)
    with pytest.raises(ParseError, match="nested deeper"):
        _parse(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode(), "application/json")


def test_parser__hostile_depth__400_and_the_decoder_never_runs():
    # Given 100 000 nested objects (no RecursionError may ever escape, whatever the stack size)
    body = ('{"a":' * 100_000 + "1" + "}" * 100_000).encode()
    with mock.patch("tracking.parsers.json.loads", side_effect=AssertionError("decoded")):
        with pytest.raises(ParseError):
            _parse(body, "application/json")


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        ('{"k": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', False),  # brackets in a string
        ('["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]', False),  # after an escaped quote
        ("[" * 33 + "]" * 33, True),
        ("[]" * 10_000, False),  # many, but shallow
        ("[" * 33, True),  # unbalanced: still counted
    ],
)
def test_json_depth_exceeds__strings_and_escapes(text, too_deep):
    assert json_depth_exceeds(text, 32) is too_deep


# --- Through the API ------------------------------------------------------------------------------
@pytest.mark.parametrize("charset", ["bz2", "zlib", "rot13", "no-such-codec"])
def test_track__non_text_charset__415_json(api, charset):
    body = zlib.compress(json.dumps(EVENT).encode()) if charset == "zlib" else json.dumps(EVENT).encode()
    response = api.generic("POST", "/api/track", body, content_type=f"application/json; charset={charset}")
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert not Event.objects.exists()


def test_track__utf16_body__stored(api):
    response = api.generic(
        "POST", "/api/track", json.dumps(EVENT).encode("utf-16"), content_type="application/json; charset=utf-16"
    )
    assert response.status_code == 201, response.content
    assert Event.objects.count() == 1


def test_track_batch__body_nested_too_deep__400_not_500(api):
    # Given a batch whose one event nests props 1000 levels deep (fits in 8 KB)
    deep = '{"a":' * 1000 + "null" + "}" * 1000
    body = '{"events": [' + json.dumps(EVENT) + ', {"user_key": "u2", "props": ' + deep + "}]}"
    # When posted, then the whole body is refused with a 400 (documented body depth limit)
    response = api.post("/api/track/batch", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper" in json.dumps(response.json())


def test_track__chunked_body__411_json(api):
    # Given a body sent with Transfer-Encoding: chunked and no Content-Length (Django would read it as empty)
    response = api.generic("POST", "/api/track", b"", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 411
    assert response.json()["error"] == "length_required"


# --- Forms ----------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded; charset=utf-16",
        "multipart/form-data; boundary=xx; charset=utf-16",
        "application/x-www-form-urlencoded; charset=bz2",
    ],
)
def test_login_form__non_utf8_charset_with_csrf_cookie__415_not_500(content_type):
    # Given a browser session with a CSRF cookie (the 400 handler re-read the body and crashed: 500)
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    token = client.get("/accounts/login/").cookies["csrftoken"].value
    body = f"csrfmiddlewaretoken={token}&username=a&password=b".encode("utf-16")
    # When the login form is posted in UTF-16
    response = client.generic("POST", "/accounts/login/", body, content_type=content_type)
    # Then it is refused as an unsupported media type
    assert response.status_code == 415


@pytest.mark.django_db
def test_login_form__utf8_charset__still_works(make_user):
    make_user("alice")
    client = Client()
    response = client.post(
        "/accounts/login/",
        "username=alice&password=pw-for-tests-1",
        content_type="application/x-www-form-urlencoded; charset=UTF-8",
    )
    assert response.status_code == 302
