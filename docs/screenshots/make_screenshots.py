"""Refresh docs/screenshots/*.png from the demo (`make screenshots`; not part of `make test`).

Migrates a throwaway SQLite database, seeds the demo (`manage.py seed_demo`), gives the demo users passwords
of this run, starts gunicorn (the repository's gunicorn.conf.py) on a free loopback port, and takes the
pictures with Debian's Chromium through Playwright:

  readout.png          /experiments/checkout-one-page/readout   (a clear winner, ready to decide; as ops)
  review.png           /review/dark-mode-default/                (a plan waiting for review; as reviewer)
  timeline.png         /experiments/gift-wrap-option/history     (shipped with an override; as reviewer)
  admin-ship-form.png  the admin's ship form for express-pay-button (blocked by a guardrail; as ops)

Usage: .venv/bin/python docs/screenshots/make_screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 900}
USERS = ("ops", "reviewer", "admin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _set_passwords(env: dict[str, str]) -> dict[str, str]:
    """Fresh passwords for the demo users, known only to this run (the database is thrown away after it)."""
    passwords = {name: secrets.token_urlsafe(12) for name in USERS}
    code = (
        "from django.contrib.auth import get_user_model\n"
        f"for name, password in {passwords!r}.items():\n"
        "    user = get_user_model().objects.get(username=name)\n"
        "    user.set_password(password)\n"
        "    user.save(update_fields=['password'])\n"
    )
    _manage(env, "shell", "-c", code)
    return passwords


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _server(env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("gunicorn did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _login(page, base: str, username: str, password: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if "/accounts/login/" in page.url:
        sys.exit(f"could not log in as {username}")


def _shoot(page, path: Path) -> None:
    page.wait_for_load_state("networkidle")  # the readout's narrative arrives by its own request
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _take(base: str, passwords: dict[str, str], out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Debian's chromium is needed (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(30_000)

        _login(page, base, "ops", passwords["ops"])
        page.goto(f"{base}/experiments/checkout-one-page/readout")
        _shoot(page, out / "readout.png")
        page.goto(f"{base}/admin/experiments/experiment/?q=express-pay-button")
        page.get_by_role("link", name="Express pay button", exact=False).first.click()
        page.wait_for_load_state()
        page.click("button[name=_fsm_transition_to][value=ship]")
        page.wait_for_load_state()
        _shoot(page, out / "admin-ship-form.png")

        _login(page, base, "reviewer", passwords["reviewer"])
        page.goto(f"{base}/review/dark-mode-default/")
        _shoot(page, out / "review.png")
        page.goto(f"{base}/experiments/gift-wrap-option/history")
        _shoot(page, out / "timeline.png")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go (default: docs/screenshots/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="signaldash-screenshots-") as tmp:
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp}/demo.sqlite3",
            "DJANGO_SETTINGS_MODULE": "signaldash.settings",
            "DEBUG": "0",
            "SIGNALDASH_AI_PROVIDER": "none",  # the deterministic narrative: no network, same words every run
            "PYTHONPATH": str(ROOT),
        }
        for name in ("REDIS_URL", "SIGNALDASH_PRODUCTION"):
            env.pop(name, None)
        _manage(env, "migrate", "--noinput", "-v0")
        _manage(env, "createcachetable")
        print(_manage(env, "seed_demo").splitlines()[0])  # the first line names the scenarios; no passwords
        passwords = _set_passwords(env)
        with _server(env) as base:
            _take(base, passwords, args.out)


if __name__ == "__main__":
    main()
