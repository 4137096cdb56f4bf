"""The structured API request log: one JSON line per API request on the `signaldash.api` logger.

Written by the API views (tracking/api.py) and, for requests that never reached a view because the
database was unavailable, by signaldash/middleware.py — the same fields either way.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

request_logger = logging.getLogger("signaldash.api")

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request) -> str:
    """The client's X-Request-ID when it is a plain token, else a new one."""
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    return incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex


def api_request_log(
    request, response, *, request_id: str, started: float, outcome: str, level: int = logging.INFO, **extra: Any
) -> None:
    """Log one API request (and set X-Request-ID on the response)."""
    response["X-Request-ID"] = request_id
    fields = {
        "event": "api_request",
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "key": getattr(request, "api_key_name", None),
        "status": response.status_code,
        "outcome": outcome,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        **extra,
    }
    request_logger.log(level, json.dumps(fields), extra={"api": fields})
