"""`Authorization: Bearer <key>` authentication against hashed, revocable `ServiceAPIKey`s.

Usable by any DRF view (e.g. `authentication_classes = [APIKeyAuthentication, SessionAuthentication]`;
list it first so a missing key answers 401 with `WWW-Authenticate` rather than 403).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import ClassVar

from django.conf import settings
from rest_framework import HTTP_HEADER_ENCODING
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from signaldash.ttl_cache import TTLCache
from tracking.models import ServiceAPIKey

KEYWORD = "Bearer"
# A verified key is remembered in this process for this long (env SIGNALDASH_API_KEY_CACHE_S, default 10;
# 0 turns it off): the revocation delay of the other processes. A key revoked or deleted in this process (the
# admin) is refused by it at once (tracking.apps forgets every key on a save or delete); every other worker
# process refuses it within this delay; expiry dates are checked on every request.
DEFAULT_CACHE_S = 10.0
_cache: TTLCache[bytes, ServiceAPIKey] = TTLCache()


def _cache_seconds() -> float:
    return float(getattr(settings, "SIGNALDASH_API_KEY_CACHE_S", DEFAULT_CACHE_S))


def _verified_key(key: str) -> ServiceAPIKey | None:
    """The usable key for this plaintext key: from the process cache when verified recently, else checked."""
    ttl = _cache_seconds()
    digest = hashlib.sha256(key.encode()).digest()  # the cache never holds plaintext keys
    now = time.monotonic()
    if ttl > 0 and (hit := _cache.get(digest, now)) is not None:
        return hit
    prefix, _, _ = key.partition(".")
    api_key = ServiceAPIKey.objects.get_usable_keys().filter(prefix=prefix).first()
    if api_key is None or not api_key.is_valid(key):
        return None
    if ttl > 0:
        _cache.put(digest, api_key, now + ttl)
    return api_key


def _authorization_header(request) -> bytes:
    """DRF's `get_authorization_header`, read from META (the same value) rather than through `request.headers`,
    which builds a dict of every header first."""
    auth = request._request.META.get("HTTP_AUTHORIZATION", b"")
    return auth.encode(HTTP_HEADER_ENCODING) if isinstance(auth, str) else auth


def api_key_cache_clear() -> None:
    _cache.clear()


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    """`request.user` for a request made with an API key: authenticated, but no person and no permissions."""

    key_id: str
    name: str

    is_authenticated: ClassVar[bool] = True
    is_anonymous: ClassVar[bool] = False
    is_active: ClassVar[bool] = True
    is_staff: ClassVar[bool] = False
    is_superuser: ClassVar[bool] = False

    def __str__(self) -> str:
        return f"api-key:{self.name}"

    @property
    def pk(self) -> str:
        return self.key_id

    def has_perm(self, perm: str, obj: object = None) -> bool:  # noqa: ARG002 - Django's user protocol
        return False

    def has_perms(self, perm_list: object, obj: object = None) -> bool:  # noqa: ARG002
        return False


class APIKeyAuthentication(BaseAuthentication):
    """Looks the key up by its prefix (one indexed query) and checks the SHA-512 hash; revoked or
    expired keys are not usable. A verified key is remembered for SIGNALDASH_API_KEY_CACHE_S (10 s).
    Sets `request.api_key_name` on the Django request for the request log.
    """

    def authenticate(self, request):
        parts = _authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Invalid Authorization header: expected 'Bearer <key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("Invalid API key.") from exc
        prefix, dot, _ = key.partition(".")
        if not dot:
            raise AuthenticationFailed("Invalid API key.")
        api_key = _verified_key(key)
        if api_key is None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        if api_key.has_expired:
            raise AuthenticationFailed("Expired API key.")
        request._request.api_key_name = api_key.name
        return ServicePrincipal(key_id=api_key.pk, name=api_key.name), api_key

    def authenticate_header(self, request) -> str:
        return f'{KEYWORD} realm="api"'
