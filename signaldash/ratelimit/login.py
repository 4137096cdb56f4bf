"""The login form with attempt limits: per user name and per client address, shared by all workers.

Every POST counts before the password is checked (so concurrent guesses cannot slip past the limit), and a
successful login clears its user name's count. Beyond the limit the form answers 429 with Retry-After
and checks no password. Rates: `SIGNALDASH_LOGIN_RATE` (per user name, default 10/15min) and
`SIGNALDASH_LOGIN_IP_RATE` (per client address, default 100/15min; behind a proxy listed in
FORWARDED_ALLOW_IPS the address comes from X-Forwarded-For).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import LoginView

from signaldash.ratelimit.counters import Rate, client_id, hit, reset

USER_SCOPE = "login-user"
IP_SCOPE = "login-ip"


def client_address(request) -> str:
    """The peer address, or, when the peer is a trusted proxy (FORWARDED_ALLOW_IPS), the address that proxy
    appended to X-Forwarded-For (the rightmost entry: the only one a client cannot forge)."""
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and remote in settings.SIGNALDASH_TRUSTED_PROXIES:
        return forwarded.rsplit(",", 1)[-1].strip()
    return remote


class RateLimitedLoginView(LoginView):
    def post(self, request, *args, **kwargs):
        user_rate = Rate.parse(settings.SIGNALDASH_LOGIN_RATE)
        ip_rate = Rate.parse(settings.SIGNALDASH_LOGIN_IP_RATE)
        username = (request.POST.get("username") or "").strip().casefold()
        by_user = hit(USER_SCOPE, client_id(username), user_rate)
        by_ip = hit(IP_SCOPE, client_id(client_address(request)), ip_rate)
        if not (by_user.allowed and by_ip.allowed):
            retry = max(v.retry_after_s for v in (by_user, by_ip) if not v.allowed)
            return self._too_many_attempts(retry)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            reset(USER_SCOPE, client_id(username), user_rate)
        return response

    def _too_many_attempts(self, retry_after_s: int):
        minutes = max(1, round(retry_after_s / 60))
        context = self.get_context_data(
            form=self.form_class(request=self.request),
            login_throttled=f"Too many login attempts. Try again in about {minutes} minute(s).",
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(retry_after_s)
        return response
