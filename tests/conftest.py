"""Shared fixtures. Network access other than loopback is blocked for every test."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.db import connection

_real_connect = socket.socket.connect


def _is_loopback(address) -> bool:
    if isinstance(address, str):  # AF_UNIX
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise RuntimeError(f"test tried to reach the network: {address!r} (only loopback is allowed)")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def restrict_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def _fresh_rate_leases():
    """Each test starts without rate-counter leases (their rows may have been rolled back with the test)."""
    from signaldash.ratelimit.counters import leases_clear

    leases_clear()


def pytest_collection_modifyitems(config, items):
    vendor = connection.vendor
    for item in items:
        if "postgres_only" in item.keywords and vendor != "postgresql":
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (runs in the PostgreSQL pass)"))


def pytest_report_header(config):
    return f"database: {connection.vendor} ({connection.settings_dict['NAME']})"


def _ensure_workflow_groups() -> None:
    """The `ops`/`reviewer` groups with their permissions, as the data migrations create them.

    Transactional tests (live server, browser) end with a flush that empties auth_group and auth_permission,
    so a later test cannot rely on the migrations' rows; re-running their functions is idempotent.
    """
    from importlib import import_module

    from django.apps import apps

    import_module("experiments.migrations.0003_workflow_groups").create_groups(apps, None)
    import_module("readouts.migrations.0003_grant_regenerate_to_ops").grant(apps, None)
    import_module("experiments.migrations.0007_metric_catalog").grant(apps, None)
    import_module("readouts.migrations.0006_warehouse_sources").grant_refresh(apps, None)


@pytest.fixture
def make_user(django_user_model):
    def _make(
        username: str,
        *,
        groups: tuple[str, ...] = (),
        is_staff: bool = False,
        is_superuser: bool = False,
        password: str = "pw-for-tests-1",
    ):
        from django.contrib.auth.models import Group

        user = django_user_model.objects.create_user(
            username=username, password=password, is_staff=is_staff or is_superuser, is_superuser=is_superuser
        )
        if groups:
            _ensure_workflow_groups()
        for name in groups:
            group, _ = Group.objects.get_or_create(name=name)
            user.groups.add(group)
        return user

    return _make


# --- Real headless browser (Debian's chromium driven by Playwright) ----------------------------
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium_path() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """A Playwright Chromium browser. Skips loudly without chromium unless REQUIRE_BROWSER=1."""
    import os

    path = _chromium_path()
    if path is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but Debian's chromium is not installed (apt-get install chromium)")
        pytest.skip("!!! chromium not installed: end-to-end browser tests SKIPPED (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls made by tests are still sync.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# Every page reports Content-Security-Policy violations to the console, where the `page` fixture collects them.
CSP_LISTENER_JS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
                " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


def _is_csp_violation(text: str) -> bool:
    return text.startswith("CSP violation:") or "Content Security Policy" in text


@pytest.fixture
def page(browser):
    """A fresh browser page. The test fails when any page it opened violated the Content-Security-Policy;
    a test that provokes a violation on purpose reads and clears `page.csp_violations`."""
    context = browser.new_context()
    context.add_init_script(CSP_LISTENER_JS)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.csp_violations = []
    pg.on("console", lambda msg: pg.csp_violations.append(msg.text) if _is_csp_violation(msg.text) else None)
    yield pg
    context.close()
    if pg.csp_violations:
        pytest.fail("Content-Security-Policy violations in the browser console:\n" + "\n".join(pg.csp_violations))


@pytest.fixture
def login(page, live_server):
    """Log a user in through the real login form: login(username, password)."""

    def _login(username: str, password: str = "pw-for-tests-1"):
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return page

    return _login
