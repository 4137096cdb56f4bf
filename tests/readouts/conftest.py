"""Readout fixtures: experiments with variants, and events written with bulk_create."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def make_experiment(owner):
    from experiments.models import Experiment, Variant

    def _make(
        slug="checkout", *, name=None, variants=(("control", True, 1), ("treatment", False, 1)), metric="purchase"
    ):
        exp = Experiment.objects.create(name=name or slug.title(), slug=slug, owner=owner, primary_metric=metric)
        for key, is_control, weight in variants:
            Variant.objects.create(experiment=exp, key=key, name=key.title(), is_control=is_control, weight=weight)
        return exp

    return _make


@pytest.fixture
def catalog_plan(make_experiment, owner):
    """catalog_plan(slug, extra_ratio=False): a draft with one catalog metric of every kind and rule — windows, a
    delay (negative too), filters, count, absolute and percentile caps (zeros ignored or not), a ratio (a second
    one, revenue capped at 50 per cart, with ``extra_ratio``) and a funnel."""
    from experiments import catalog, services
    from experiments.models import ExperimentMetric, Metric

    def save(**fields):
        return catalog.metric_save(metric=Metric(**fields), actor=owner, source="service")

    def _make(slug: str, *, extra_ratio: bool = False):
        exp = make_experiment(slug)
        m = {
            "conv": save(key="conv", name="Conv", kind="binary", event="purchase", delay_hours=1, window_hours=24,
                         filter_prop="channel", filter_values=["web", "true"]),
            "rev_p": save(key="rev_p", name="Rev p90", kind="mean", event="purchase", cap="percentile",
                          cap_value=0.9),
            "rev_pz": save(key="rev_pz", name="Rev p75 nz", kind="mean", event="purchase", cap="percentile",
                           cap_value=0.75, cap_ignore_zeros=True),
            "rev_abs": save(key="rev_abs", name="Rev abs", kind="mean", event="purchase", cap="absolute",
                            cap_value=50, delay_hours=-2, window_hours=48),
            "orders": save(key="orders", name="Orders", kind="mean", event="purchase", aggregation="count",
                           filter_prop="channel", filter_values=["web", "1"]),
            "carts": save(key="carts", name="Carts", kind="mean", event="cart", aggregation="count",
                          window_hours=6),
        }  # fmt: skip
        m["rpo"] = save(key="rpo", name="RPO", kind="ratio", numerator=m["rev_p"], denominator=m["orders"])
        if extra_ratio:
            m["rpc"] = save(key="rpc", name="RPC", kind="ratio", numerator=m["rev_abs"], denominator=m["carts"])
        m["funnel"] = save(key="funnel", name="Funnel", kind="funnel", steps=["view", "cart", "purchase"],
                           window_hours=72, delay_hours=0.5)  # fmt: skip
        for i, metric in enumerate(m.values()):
            services.experiment_metric_save(
                metric=ExperimentMetric(experiment=exp, metric=metric, role="primary" if i == 0 else "secondary"),
                actor=owner,
            )
        return exp

    return _make


@pytest.fixture
def add_events():
    """add_events(exp, variant_key, exposures=n, conversions=k, metric=..., prefix=...): k of n users convert."""
    from tracking.models import Event

    def _add(exp, variant_key, *, exposures, conversions=0, metric=None, prefix=None, start=T0, convert_after=60):
        variant = exp.variants.get(key=variant_key)
        metric = metric or exp.primary_metric
        prefix = prefix or f"{variant_key}-u"
        events = []
        for i in range(exposures):
            at = start + timedelta(minutes=i)
            events.append(
                Event(experiment=exp, variant=variant, user_key=f"{prefix}{i}", event_type="exposure", occurred_at=at)
            )
            if i < conversions:
                events.append(
                    Event(
                        experiment=exp,
                        variant=variant,
                        user_key=f"{prefix}{i}",
                        event_type="conversion",
                        metric=metric,
                        occurred_at=at + timedelta(seconds=convert_after),
                    )
                )
        Event.objects.bulk_create(events, batch_size=2000)

    return _add


# --- A local HTTP server imitating the OpenAI and Anthropic APIs ---------------------------------


class FakeAI:
    """Serves POST /v1/chat/completions (OpenAI) and /v1/messages (Anthropic) on 127.0.0.1.

    `mode`: "ok" (reply with `text`), "slow" (wait `delay` s first), "500" (internal error).
    `hits` counts requests per path; `requests` keeps the JSON bodies.
    """

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode, self.text, self.delay = "ok", "", 5.0
        self.hits: dict[str, int] = {}
        self.requests: list[dict] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.hits[self.path] = fake.hits.get(self.path, 0) + 1
                fake.requests.append(body)
                if fake.mode == "slow":
                    fake.release.wait(fake.delay)
                if fake.mode == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if self.path.endswith("/chat/completions"):
                    return self._send(200, fake.openai_body(body))
                if self.path.endswith("/messages"):
                    return self._send(200, fake.anthropic_body(body))
                return self._send(404, {"error": {"message": "not found"}})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits up to one interval (the default 0.5 s, per test).
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())

    def openai_body(self, request: dict) -> dict:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": request.get("model", "gpt-test"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    def anthropic_body(self, request: dict) -> dict:
        return {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "claude-test"),
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10},
        }

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_ai():
    server = FakeAI()
    yield server
    server.close()


@pytest.fixture(params=["openai", "anthropic"])
def ai_provider(request, settings, fake_ai):
    """Settings pointing the real SDK client of each provider at the fake server."""
    settings.SIGNALDASH_AI_PROVIDER = request.param
    settings.SIGNALDASH_AI_TIMEOUT_S = 2.0
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = f"{fake_ai.url}/v1"
    settings.OPENAI_MODEL = "gpt-test"
    settings.ANTHROPIC_API_KEY = "sk-ant-test"
    settings.ANTHROPIC_BASE_URL = fake_ai.url
    settings.ANTHROPIC_MODEL = "claude-test"
    return request.param


# --- One Spark Connect server per test session (tests/sparkcluster.py) -------------------------------
@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory):
    """(sc:// URL, UI port) of a Spark Connect server on a two-executor local cluster, started once."""
    from tests import sparkcluster

    if not sparkcluster.java_available():
        pytest.skip("Spark tests need Java 17 (Debian openjdk-17-jre-headless)")
    with sparkcluster.spark_connect_server(tmp_path_factory.mktemp("spark")) as server:
        yield server
