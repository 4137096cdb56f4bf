"""A JSON parser with a per-view body limit (413) that never lets malformed input become a 500.

Three rules run before `json.loads` sees a byte:
- size: at most `view.max_body_bytes` (413), read with a bound, never more;
- charset: the `charset` of the Content-Type must be a text encoding from `TEXT_CHARSETS` (415
  otherwise). Python's codec registry also holds bytes-to-bytes codecs (`bz2`, `zlib`, `base64`,
  `hex`, ...) and `rot13`; decoding with those would turn a small body into a huge one, so they are
  refused without decoding;
- nesting: at most `MAX_JSON_DEPTH` levels of arrays/objects in the whole body (400 otherwise),
  counted by an iterative scan, so no recursive decoder can run out of stack on a hostile body.
"""

from __future__ import annotations

import codecs
import json
import re
from itertools import accumulate

from django.conf import settings
from django.utils.http import parse_header_parameters
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

# Arrays/objects nested deeper than this anywhere in a body make the whole body a 400. A batch
# envelope uses 3 levels (`{"events": [{...}]}`), so an event's `props` may nest 29 levels here;
# the per-event props rule (tracking/fields.py) is stricter and rejects single items instead.
MAX_JSON_DEPTH = 512  # deep enough that a bad batch item is refused on its own (props: 5 levels)

# Canonical codec names (`codecs.lookup(name).name`) a JSON body may be declared in. JSON is UTF-8
# (RFC 8259); UTF-16/32 were allowed by RFC 7159; ASCII/Latin-1/Windows-1252 are common mislabels
# that still decode a byte to at most one character.
TEXT_CHARSETS = frozenset(
    {
        "utf-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
        "ascii",
        "iso8859-1",
        "cp1252",
    }
)

# A JSON string (possessive: linear time on any input, no backtracking); brackets inside strings
# do not nest.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


def text_charset(name: str) -> str | None:
    """The canonical codec name if `name` is an allowed text charset, else None (unknown or not text)."""
    if len(name) > 40:
        return None
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return None
    return canonical if canonical in TEXT_CHARSETS else None


def declared_charset(content_type: str) -> str | None:
    """The `charset` parameter of a Content-Type header value, or None when absent."""
    _, params = parse_header_parameters(content_type or "")
    return params.get("charset")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays/objects nest deeper than `limit` anywhere in `text` (iterative, linear time).

    Malformed text (unbalanced brackets, an unterminated string) is left to the JSON decoder;
    this only guarantees the decoder never meets more than `limit` levels.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    steps = (1 if bracket in "[{" else -1 for bracket in brackets)
    return any(depth > limit for depth in accumulate(steps))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def plain_json_body(request, limit: int | None) -> bytes | None:
    """The raw body of a request that `LimitedJSONParser` would decode as UTF-8 JSON within its limit (media
    type `application/json`, charset absent or UTF-8, a declared length within `limit`), else None: a body for
    the fast decoders (tracking/fast_batch.py), which then answer nothing the parser would refuse."""
    meta = request.META
    declared = meta.get("CONTENT_LENGTH") or ""
    if not declared.isdigit() or int(declared) > (limit or settings.DATA_UPLOAD_MAX_MEMORY_SIZE):
        return None
    content_type = meta.get("CONTENT_TYPE") or ""
    # The common header needs no parsing (parse_header_parameters gives exactly this for it).
    media_type, params = (
        (content_type, {}) if content_type == "application/json" else parse_header_parameters(content_type)
    )
    if media_type != "application/json" or set(params) - {"charset"}:
        return None
    if text_charset(params.get("charset") or settings.DEFAULT_CHARSET) != "utf-8":
        return None
    return request.body


class LimitedJSONParser(BaseParser):
    """Strict JSON (no NaN/Infinity), at most `view.max_body_bytes` (default DATA_UPLOAD_MAX_MEMORY_SIZE).

    Not a `JSONParser` subclass on purpose: DRF reads the whole body into memory before calling those;
    this one reads the stream itself and stops one byte past the limit.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = self._encoding(media_type)
        view = parser_context.get("view")
        limit = getattr(view, "max_body_bytes", None) or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = parser_context.get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"Request body exceeds {limit} bytes.")
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge(f"Request body exceeds {limit} bytes.")
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - body is not valid {encoding}: {exc.reason}") from exc
        if json_depth_exceeds(text):
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc

    def _encoding(self, media_type: str | None) -> str:
        """The declared charset if it is an allowed text encoding (415 otherwise); default UTF-8."""
        name = declared_charset(media_type or "")
        if name is None:
            return settings.DEFAULT_CHARSET
        canonical = text_charset(name)
        if canonical is None:
            raise UnsupportedMediaType(
                media_type,
                detail=f"Unsupported charset {name[:40]!r}: send UTF-8 JSON (or another text encoding).",
            )
        return canonical
