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


def pytest_collection_modifyitems(config, items):
    vendor = connection.vendor
    for item in items:
        if "postgres_only" in item.keywords and vendor != "postgresql":
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (runs in the PostgreSQL pass)"))


def pytest_report_header(config):
    return f"database: {connection.vendor} ({connection.settings_dict['NAME']})"


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


@pytest.fixture
def page(browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


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
