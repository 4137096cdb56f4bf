"""The AI narrative with the real openai / anthropic SDK clients against a local fake server."""

from __future__ import annotations

import time

import pytest

from readouts.models import Narrative
from readouts.narrative import (
    narrative_fallback_text,
    narrative_for_page,
    narrative_generate,
    narrative_guard,
    readout_numbers,
)
from readouts.selectors import readout_get

pytestmark = pytest.mark.django_db

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


@pytest.fixture
def exp(make_experiment, add_events):
    exp = make_experiment("checkout", name="Checkout 2 step")
    add_events(exp, "control", exposures=1000, conversions=100)
    add_events(exp, "treatment", exposures=1000, conversions=130)
    return exp


def good_text(readout) -> str:
    """What a well-behaved model writes: only numbers copied from the readout."""
    n = readout_numbers(readout)
    c, t = n["variants"]
    (comp,) = n["comparisons"]
    return (
        f"Treatment converted {t['converted_users']:,} of {t['exposed_users']:,} exposed users ({t['rate']}) "
        f"against {c['rate']} for control, a difference of {comp['difference']} "
        f"(95% CI {comp['difference_ci_95'][0]} to {comp['difference_ci_95'][1]}) and a lift of {comp['lift']}. "
        f"With p = {comp['p_value']} (below 0.05) this suggests, but does not prove, a real improvement."
    )


def test_narrative_guard__fallback_text__states_only_readout_numbers(exp):
    readout = readout_get(experiment=exp)
    numbers = {**readout_numbers(readout), "experiment_name": readout.experiment_name}
    assert narrative_guard(narrative_fallback_text(readout), numbers) == []
    assert narrative_guard(good_text(readout), numbers) == []


@pytest.mark.parametrize(
    "claim",
    ["Treatment lifted conversion by 97.3%.", "We saw 1,234 converted users.", "p = 0.0001", "a 3.1 pp gain"],
)
def test_narrative_guard__invented_or_misstated_number__flagged(exp, claim):
    readout = readout_get(experiment=exp)
    numbers = {**readout_numbers(readout), "experiment_name": readout.experiment_name}
    assert narrative_guard(claim, numbers) != []


def test_narrative_generate__provider_success__cached_and_never_called_twice(exp, fake_ai, ai_provider):
    # Given a provider that answers with a faithful narrative
    readout = readout_get(experiment=exp)
    fake_ai.text = good_text(readout)
    # When the narrative is generated twice and the page is rendered
    first = narrative_generate(readout=readout)
    second = narrative_generate(readout=readout_get(experiment=exp))
    page = narrative_for_page(readout=readout_get(experiment=exp))
    # Then the provider was called once, through its real API path
    assert fake_ai.hits == {PATHS[ai_provider]: 1}
    assert first.source == second.source == page.source == ai_provider
    assert first.text == fake_ai.text and first.model in ("gpt-test", "claude-test")
    assert not page.stale and page.generated_at is not None
    row = Narrative.objects.get()
    assert row.readout_numbers["variants"][1]["converted_users"] == 130
    assert row.fingerprint and row.prompt_version
    # And the prompt carried the readout numbers
    assert "13.00%" in str(fake_ai.requests[0])


def test_narrative_generate__slow_provider__fallback_within_timeout(exp, fake_ai, ai_provider, settings):
    # Given a provider slower than the timeout
    settings.SIGNALDASH_AI_TIMEOUT_S = 0.5
    fake_ai.mode, fake_ai.delay = "slow", 60.0  # released at teardown: a long delay costs nothing
    readout = readout_get(experiment=exp)
    # When
    started = time.monotonic()
    view = narrative_generate(readout=readout)
    elapsed = time.monotonic() - started
    # Then it gave up at the timeout: far from both the 0.5 s timeout and the provider's 60 s (noise-proof)
    assert elapsed < fake_ai.delay / 4
    assert view.source == "fallback"
    assert view.text == narrative_fallback_text(readout)
    assert "timeout" in view.failure_reason
    assert Narrative.objects.get().failure_reason.startswith("timeout")


def test_narrative_generate__provider_500__fallback_with_reason(exp, fake_ai, ai_provider, caplog):
    # Given a failing provider
    fake_ai.mode = "500"
    # When
    view = narrative_generate(readout=readout_get(experiment=exp))
    # Then
    assert view.source == "fallback"
    assert "provider error" in view.failure_reason
    assert fake_ai.total_hits == 1  # max_retries=0: no hidden retries
    assert "fell back" in caplog.text


def test_narrative_generate__made_up_number__discarded_by_guard(exp, fake_ai, ai_provider):
    # Given a provider that invents a number
    readout = readout_get(experiment=exp)
    fake_ai.text = good_text(readout) + " Revenue rose 41.7% as well."
    # When
    view = narrative_generate(readout=readout)
    again = narrative_generate(readout=readout_get(experiment=exp))
    # Then the fallback is shown, the reason names the number, and the same numbers cost no second call
    assert view.source == "fallback" and "41.7" not in view.text
    assert "guard" in view.failure_reason and "41.7" in view.failure_reason
    assert again.source == "fallback" and fake_ai.total_hits == 1


def test_narrative_generate__missing_key__fallback_without_call(exp, fake_ai, ai_provider, settings):
    settings.OPENAI_API_KEY = settings.ANTHROPIC_API_KEY = None
    view = narrative_generate(readout=readout_get(experiment=exp))
    assert view.source == "fallback" and "API_KEY is not set" in view.failure_reason
    assert fake_ai.total_hits == 0


def test_narrative_generate__provider_none__fallback_and_nothing_stored(exp, fake_ai, settings):
    settings.SIGNALDASH_AI_PROVIDER = "none"
    view = narrative_generate(readout=readout_get(experiment=exp))
    assert view.source == "fallback" and not view.pending
    assert Narrative.objects.count() == 0 and fake_ai.total_hits == 0


def test_narrative_for_page__numbers_changed__previous_narrative_marked_stale(exp, fake_ai, ai_provider, add_events):
    # Given a cached narrative
    readout = readout_get(experiment=exp)
    fake_ai.text = good_text(readout)
    narrative_generate(readout=readout)
    # When new events arrive
    add_events(exp, "treatment", exposures=5, conversions=5, prefix="late-")
    page = narrative_for_page(readout=readout_get(experiment=exp))
    # Then the old narrative is shown as stale, without a provider call
    assert page.stale and page.source == ai_provider and not page.pending
    assert fake_ai.total_hits == 1
    # And a refresh for the new numbers calls the provider once more
    fresh_readout = readout_get(experiment=exp)
    fake_ai.text = good_text(fresh_readout)
    fresh = narrative_generate(readout=fresh_readout)
    assert not fresh.stale and fake_ai.total_hits == 2
    assert not narrative_for_page(readout=readout_get(experiment=exp)).stale


def test_narrative_generate__force_failure__keeps_last_good_text_and_records_failure(exp, fake_ai, ai_provider):
    # Given a cached good narrative
    readout = readout_get(experiment=exp)
    fake_ai.text = good_text(readout)
    good = narrative_generate(readout=readout)
    # When ops regenerate and the provider fails
    fake_ai.mode = "500"
    view = narrative_generate(readout=readout_get(experiment=exp), force=True)
    # Then
    assert view.text == good.text and view.source == ai_provider
    assert "provider error" in Narrative.objects.get().failure_reason
    assert fake_ai.total_hits == 2


def test_readout_page__provider_slow__page_renders_at_once_without_calling(
    client, make_user, exp, fake_ai, ai_provider, settings
):
    # Given a provider that would take far longer than a page view may
    settings.SIGNALDASH_AI_TIMEOUT_S = 60
    fake_ai.mode, fake_ai.delay = "slow", 60.0
    client.force_login(make_user("viewer", groups=("reviewer",)))
    # When
    started = time.monotonic()
    response = client.get("/experiments/checkout/readout")
    # Then the page is back without waiting for the provider (far below its 60 s), with the fallback,
    # asking the browser to fetch the narrative
    assert time.monotonic() - started < fake_ai.delay / 4
    assert fake_ai.total_hits == 0
    html = response.content.decode()
    assert 'data-pending="1"' in html and 'data-field="source">fallback<' in html


def test_narrative_endpoint__post__generates_json_then_page_shows_cached(client, make_user, exp, fake_ai, ai_provider):
    # Given
    client.force_login(make_user("viewer", groups=("reviewer",)))
    fake_ai.text = good_text(readout_get(experiment=exp))
    # When the page's script posts for the narrative, then the page is loaded again
    data = client.post("/experiments/checkout/readout/narrative", HTTP_ACCEPT="application/json").json()
    html = client.get("/experiments/checkout/readout").content.decode()
    # Then
    assert data["source"] == ai_provider and data["text"] == fake_ai.text and data["generated_at"]
    assert f'data-field="source">{ai_provider}<' in html and 'data-pending="0"' in html
    assert fake_ai.total_hits == 1


def test_narrative_endpoint__hostile_narrative__escaped_on_page(client, make_user, exp, fake_ai, ai_provider):
    # Given a provider reply containing markup (no numbers, so the guard lets it through)
    client.force_login(make_user("viewer", groups=("reviewer",)))
    fake_ai.text = "<img src=x onerror=alert(document.cookie)> looks good"
    client.post("/experiments/checkout/readout/narrative", HTTP_ACCEPT="application/json")
    # When
    html = client.get("/experiments/checkout/readout").content.decode()
    # Then
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(document.cookie)&gt; looks good" in html


def test_narrative_regenerate__ops__calls_provider_again(client, make_user, exp, fake_ai, ai_provider):
    # Given a cached narrative
    client.force_login(make_user("opsy", groups=("ops",)))
    fake_ai.text = good_text(readout_get(experiment=exp))
    client.post("/experiments/checkout/readout/narrative", HTTP_ACCEPT="application/json")
    # When ops regenerate (a form post without JS redirects back to the page)
    response = client.post("/experiments/checkout/readout/narrative/regenerate")
    # Then
    assert response.status_code == 302 and response["Location"].startswith("/experiments/checkout/readout")
    assert fake_ai.total_hits == 2
    assert Narrative.objects.count() == 1
