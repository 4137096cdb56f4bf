"""The readout narrative: a deterministic fallback, and an optional AI narrative around it.

One function talks to a provider (``_call_provider``); around it: a DB cache keyed by a SHA-256
fingerprint of the readout numbers (``readouts.Narrative``), a guard that discards any narrative
stating a number that is not in the readout, and the fallback for every failure (timeout, provider
error, missing key, guard). Nothing here runs on the readout page's request: the page reads the
cache (``narrative_for_page``) and fetches a fresh one in a separate request (``narrative_generate``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from readouts import formatting
from readouts.formatting import p_value as format_p  # '< 0.001' for people, as on the page
from readouts.guard import narrative_guard, verdict_guard
from readouts.models import Narrative
from readouts.selectors import Readout
from readouts.verdicts import UNTRUSTWORTHY, Verdict, verdicts_get

logger = logging.getLogger(__name__)

PROMPT_VERSION = "v2"  # v2: the verdicts lead, p-values in words
SIGNIFICANCE_ALPHA = 0.05
PROVIDERS = ("openai", "anthropic")

SYSTEM_PROMPT = (
    "You summarise A/B test readouts for product teams in 3 to 5 plain sentences. "
    "Use ONLY the numbers given in the readout, copied exactly as written there; never compute, round "
    "or invent other numbers, and do not mention dates. Say what the data suggests, never that it proves "
    "anything. If p is 0.05 or more, say the data does not show a clear difference. Mention every warning. "
    "Open with each treatment's verdict headline exactly as given under 'verdicts' (for example 'Untrustworthy' "
    "or 'Won — ship blocked by guardrail refund'), and never describe an untrustworthy result as better or worse."
)


# --- Numbers as they are stated (shared by the fallback, the prompt and the guard) ---------------


# Formatted by readouts.formatting (the one home of number formatting), with ASCII minus signs.
def _pct(x: float | None) -> str:
    return formatting.ascii_minus(formatting.pct(x))


def _pp(x: float | None) -> str:
    return formatting.ascii_minus(formatting.pp(x, unit="percentage points"))


def _ci(i, fmt) -> list[str] | None:
    return [fmt(i.low), fmt(i.high)] if i is not None else None


def _variant_numbers(v, kind: str) -> dict:
    out = {
        "key": v.key,
        "name": v.name,
        "is_control": v.is_control,
        "exposed_users": v.exposures,
        "converted_users": v.conversions,
    }
    if kind == "binary":
        out["rate"] = _pct(v.rate.rate)
        out["rate_ci_95"] = [_pct(v.rate.ci.low), _pct(v.rate.ci.high)] if v.rate.ci else None
    else:
        out["mean"] = formatting.ascii_minus(formatting.number(v.summary.mean))
        out["sd"] = formatting.ascii_minus(formatting.number(v.summary.sd))
    return out


def _lift(x: float | None) -> str:
    return "undefined" if x is None else formatting.ascii_minus(formatting.signed_pct(x))


def _comparison_numbers(c, kind: str) -> dict:
    diff = _pp if kind == "binary" else (lambda x: "n/a" if x is None else f"{x:+,.2f}")
    out = {
        "variant": c.variant,
        "control": c.control,
        "difference": diff(c.diff),
        "difference_ci_95": _ci(c.diff_ci, diff),
        "lift": "undefined" if c.lift is None else f"{c.lift:+.2f}%",
        "lift_note": c.lift_reason,
        "lift_ci_95": _ci(c.rel.rel_lift_ci, _lift),
        ("z" if kind == "binary" else "t"): "n/a" if c.z is None else f"{c.z:.3f}",
        "p_value": format_p(c.p_value),
        "p_value_holm": format_p(c.p_value_adjusted),
        "always_valid_lift_ci_95": _ci(c.sequential.rel_lift_ci, _lift),
        "chance_to_beat": "n/a" if c.bayes.chance_to_beat is None else f"{c.bayes.chance_to_beat * 100:.1f}%",
        "outcome": c.outcome,
        "test_note": c.test_reason,
    }
    if c.cuped is not None:
        out["cuped_lift"] = _lift(c.cuped.rel_lift)
        out["cuped_lift_ci_95"] = _ci(c.cuped.rel_lift_ci, _lift)
    return out


def _verdict_words(v: Verdict) -> dict:
    return {"variant": v.variant, "label": v.label, "headline": v.headline, "blocked_by": list(v.blocked_by)}


def readout_numbers(readout: Readout, verdicts: list[Verdict] | None = None) -> dict:
    """The numbers a narrative may state, formatted once; stored with each narrative and fingerprinted.

    Keys name the quantity (``readouts.guard.KEY_KINDS``): the guard holds each stated number to the
    readout's value of that kind, for that arm, with that sign. ``verdicts`` (computed when not given) lead:
    the narrative must not contradict them (``readouts.guard.verdict_guard``).
    """
    kind = readout.metric_kind
    verdicts = verdicts_get(readout) if verdicts is None else verdicts
    return {
        "verdicts": [_verdict_words(v) for v in verdicts],
        "experiment": readout.experiment_slug,
        "metric": readout.metric,
        "metric_kind": kind,
        "alpha": readout.alpha,
        "variants": [_variant_numbers(v, kind) for v in readout.variants],
        "comparisons": [_comparison_numbers(c, kind) for c in readout.comparisons],
        "scorecard": [
            {
                "metric": r.key,
                "role": r.role,
                "direction": r.direction,
                "comparisons": [
                    {
                        "variant": c.variant,
                        "lift": _lift(c.rel.rel_lift),
                        "lift_ci_95": _ci(c.rel.rel_lift_ci, _lift),
                        "p_value_holm": format_p(c.p_value_adjusted),
                        "outcome": c.outcome,
                    }
                    for c in r.comparisons
                ],
            }
            for r in readout.scorecard
            if r.key != readout.metric
        ],
        "srm": {
            "chi2": "n/a" if readout.srm.chi2 is None else f"{readout.srm.chi2:.3f}",
            "p_value": format_p(readout.srm.p_value),
        },
        "warnings": [{"code": w["code"], "message": w["message"]} for w in readout.warnings],
    }


def fingerprint(numbers: dict) -> str:
    return hashlib.sha256(json.dumps(numbers, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- Deterministic fallback ---------------------------------------------------------------------


def _verdict_sentence(v: Verdict) -> str:
    if v.label == UNTRUSTWORTHY:
        return (
            f"Verdict for {v.variant}: Untrustworthy — do not act on these numbers: "
            f"{', '.join(v.failing) or 'a health check'} failed."
        )
    return f"Verdict for {v.variant}: {v.headline}."


def _comparison_sentence(c, kind: str, alpha: float, *, trusted: bool = True) -> str:
    if c.diff is None:
        return f"{c.variant} cannot be compared with {c.control}: {c.test_reason}"
    diff = _pp if kind == "binary" else (lambda x: f"{x:+,.2f} per user")
    lift = f"{c.lift_reason}." if c.lift is None else f"The relative lift is {c.lift:+.2f}%."
    text = (
        f"{c.variant} differs from {c.control} by {diff(c.diff)} "
        f"(95% CI {diff(c.diff_ci.low)} to {diff(c.diff_ci.high)}). {lift}"
    )
    if c.p_value is None:
        return f"{text} {c.test_reason}"
    p = c.p_value_adjusted if c.p_value_adjusted is not None else c.p_value
    if not trusted:
        verdict = "cannot be read as an effect while a health check fails"
    elif p < alpha:
        verdict = "suggests a real difference, though it does not prove one"
    else:
        verdict = "does not show a clear difference"
    test = f"z = {c.z:.3f}" if kind == "binary" else f"t = {c.z:.3f}"
    holm = f", Holm-adjusted p = {format_p(c.p_value_adjusted)}" if c.p_value_adjusted is not None else ""
    return f"{text} The two-sided test gives {test}, p = {format_p(c.p_value)}{holm}, which {verdict}."


def _variant_sentence(v, kind: str) -> str:
    label = f"{v.key} (control)" if v.is_control else v.key
    if v.exposures == 0:
        return f"{label} has no exposed users yet."
    if kind == "binary":
        return f"{label}: {v.conversions} of {v.exposures} exposed users converted ({_pct(v.rate.rate)})."
    return f"{label}: {v.exposures} exposed users, a mean of {v.summary.mean:,.2f} per user."


def _scorecard_sentence(readout: Readout, *, trusted: bool = True) -> str:
    others = [r for r in readout.scorecard if r.key != readout.metric]
    if not others:
        return ""
    if not trusted:
        keys = ", ".join(r.key for r in others)
        return f"Other planned metrics ({keys}) are not read either while a health check fails."
    parts = [f"{r.key} ({r.role}) is {c.outcome} for {c.variant}" for r in others for c in r.comparisons]
    return f"Other planned metrics: {'; '.join(parts)}." if parts else ""


def narrative_fallback_text(readout: Readout, verdicts: list[Verdict] | None = None) -> str:
    """A plain summary built only from the readout numbers (no provider involved), verdicts first."""
    kind = readout.metric_kind
    verdicts = verdicts_get(readout) if verdicts is None else verdicts
    trusted = not any(v.label == UNTRUSTWORTHY for v in verdicts)
    parts = [f"Readout of {readout.experiment_name} on metric {readout.metric}."]
    parts += [_verdict_sentence(v) for v in verdicts]
    parts += [_variant_sentence(v, kind) for v in readout.variants]
    parts += [_comparison_sentence(c, kind, readout.alpha, trusted=trusted) for c in readout.comparisons]
    if scorecard := _scorecard_sentence(readout, trusted=trusted):
        parts.append(scorecard)
    if readout.warnings:
        parts.append("Warnings: " + " ".join(w["message"] for w in readout.warnings))
    else:
        parts.append("No data-quality warnings.")
    return " ".join(parts)


# --- The one function that talks to a provider ---------------------------------------------------


class ProviderError(Exception):
    pass


def provider_settings() -> tuple[str, str, str | None, str | None]:
    """(provider, model, api key, base url) from settings; provider 'none' disables the AI narrative."""
    provider = (settings.SIGNALDASH_AI_PROVIDER or "none").lower()
    if provider == "openai":
        return provider, settings.OPENAI_MODEL or "", settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL
    if provider == "anthropic":
        return provider, settings.ANTHROPIC_MODEL or "", settings.ANTHROPIC_API_KEY, settings.ANTHROPIC_BASE_URL
    return "none", "", None, None


def _user_prompt(numbers: dict) -> str:
    return "Readout numbers (JSON). State numbers only as written here:\n" + json.dumps(numbers, indent=2)


def _sdk(provider: str):
    """The provider's SDK module. Imported lazily (importing anthropic takes seconds), and by ``_ask``
    before the timeout clock starts, so a cold import never eats into the provider's time budget."""
    return importlib.import_module(provider)


def _call_provider(*, provider: str, model: str, api_key: str, base_url: str | None, numbers: dict) -> str:
    """Ask the provider for a narrative. Raises on any failure; bounded by SIGNALDASH_AI_TIMEOUT_S."""
    timeout = float(settings.SIGNALDASH_AI_TIMEOUT_S)
    if provider == "openai":
        openai = _sdk(provider)
        client = openai.OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": _user_prompt(numbers)}],
            max_completion_tokens=500,
        )
        return (reply.choices[0].message.content or "").strip()
    anthropic = _sdk(provider)
    client = anthropic.Anthropic(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)
    reply = client.messages.create(
        model=model,
        max_tokens=500,
        system=SYSTEM_PROMPT,
        messages=[{"role": "user", "content": _user_prompt(numbers)}],
    )
    return "".join(getattr(block, "text", "") for block in reply.content).strip()


_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="narrative")


def _ask(*, provider: str, model: str, api_key: str | None, base_url: str | None, numbers: dict) -> tuple[str, str]:
    """(text, failure reason): exactly one of them is empty. Never raises, never exceeds the timeout by much."""
    if not api_key:
        return "", f"{provider.upper()}_API_KEY is not set"
    timeout = float(settings.SIGNALDASH_AI_TIMEOUT_S)
    _sdk(provider)
    future = _EXECUTOR.submit(
        _call_provider, provider=provider, model=model, api_key=api_key, base_url=base_url, numbers=numbers
    )
    try:
        text = future.result(timeout=timeout + 1.0)  # hard wall-clock bound on top of the SDK timeout
    except FutureTimeout:
        return "", f"timeout after {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - any provider failure means: show the fallback
        if "Timeout" in type(exc).__name__:  # openai.APITimeoutError, anthropic.APITimeoutError
            return "", f"timeout after {timeout:g} s"
        return "", f"provider error: {type(exc).__name__}: {str(exc)[:300]}"
    if not text:
        return "", "provider returned an empty narrative"
    invented = narrative_guard(text, numbers)
    if invented:
        return "", "guard: the narrative stated numbers that are not in the readout: " + ", ".join(invented[:10])
    contradicted = verdict_guard(text, numbers)
    if contradicted:
        return "", "guard: the narrative left out the verdict: " + "; ".join(contradicted[:10])
    return text, ""


# --- Cache and what the page shows --------------------------------------------------------------


@dataclass(frozen=True)
class NarrativeView:
    text: str
    source: str  # openai | anthropic | fallback
    model: str
    generated_at: datetime | None
    stale: bool = False  # written from older readout numbers
    failure_reason: str = ""
    pending: bool = False  # the page should fetch the AI narrative in a separate request

    def as_json(self) -> dict:
        return {
            "text": self.text,
            "source": self.source,
            "model": self.model,
            "generated_at": self.generated_at.isoformat() if self.generated_at else None,
            "stale": self.stale,
            "failure_reason": self.failure_reason,
            "pending": self.pending,
        }


def _fallback_view(
    readout: Readout, verdicts: list[Verdict], *, pending: bool = False, reason: str = ""
) -> NarrativeView:
    return NarrativeView(
        text=narrative_fallback_text(readout, verdicts),
        source=Narrative.Source.FALLBACK,
        model="",
        generated_at=readout.computed_at,
        failure_reason=reason,
        pending=pending,
    )


def _row_view(row: Narrative, *, stale: bool = False) -> NarrativeView:
    return NarrativeView(
        text=row.text,
        source=row.source,
        model=row.model if row.source != Narrative.Source.FALLBACK else "",
        generated_at=row.created_at,
        stale=stale,
        failure_reason=row.failure_reason,
    )


def _numbers_and_key(readout: Readout, verdicts: list[Verdict]) -> tuple[dict, dict]:
    provider, model, _, _ = provider_settings()
    numbers = {**readout_numbers(readout, verdicts), "experiment_name": readout.experiment_name}
    key = {
        "experiment_id": readout.experiment_id,
        "metric": readout.metric,
        "fingerprint": fingerprint(numbers),
        "provider": provider,
        "model": model,
        "prompt_version": PROMPT_VERSION,
    }
    return numbers, key


def narrative_for_page(*, readout: Readout, verdicts: list[Verdict] | None = None) -> NarrativeView:
    """What the readout page shows at once: the cache or the fallback. Never calls a provider."""
    verdicts = verdicts_get(readout) if verdicts is None else verdicts
    numbers, key = _numbers_and_key(readout, verdicts)
    if key["provider"] == "none":
        return _fallback_view(readout, verdicts)
    row = Narrative.objects.filter(**key).first()
    if row is not None:
        return _row_view(row)
    previous = (
        Narrative.objects.filter(experiment_id=readout.experiment_id, metric=readout.metric)
        .exclude(source=Narrative.Source.FALLBACK)
        .order_by("-created_at", "-id")
        .first()
    )
    if previous is not None:
        return _row_view(previous, stale=True)
    return _fallback_view(readout, verdicts, pending=True)


def narrative_generate(
    *, readout: Readout, force: bool = False, verdicts: list[Verdict] | None = None
) -> NarrativeView:
    """The narrative for the current numbers: from the cache, or one provider call (``force``: call again).

    A failure stores the deterministic fallback for these numbers (so they never cost a second call),
    except when it replaces a good AI narrative on ``force``: then the last good text is kept and the
    failure recorded on it.
    """
    verdicts = verdicts_get(readout) if verdicts is None else verdicts
    numbers, key = _numbers_and_key(readout, verdicts)
    if key["provider"] == "none":
        return _fallback_view(readout, verdicts)
    row = Narrative.objects.filter(**key).first()
    if row is not None and not force:
        return _row_view(row)
    lock = f"readouts:narrative:{key['fingerprint']}:{key['provider']}:{key['model']}"
    if not cache.add(lock, 1, timeout=int(settings.SIGNALDASH_AI_TIMEOUT_S) + 5):
        return _fallback_view(
            readout, verdicts, pending=True, reason="a narrative for these numbers is being generated"
        )
    try:
        _, _, api_key, base_url = provider_settings()
        text, reason = _ask(
            provider=key["provider"], model=key["model"], api_key=api_key, base_url=base_url, numbers=numbers
        )
        fallback = narrative_fallback_text(readout, verdicts)
        return _store(readout=readout, key=key, numbers=numbers, row=row, text=text or fallback, reason=reason)
    finally:
        cache.delete(lock)


def _store(*, readout: Readout, key: dict, numbers: dict, row: Narrative | None, text: str, reason: str):
    if reason:
        logger.warning("readout narrative for %s/%s fell back: %s", readout.experiment_slug, readout.metric, reason)
    if reason and row is not None and row.source != Narrative.Source.FALLBACK:
        Narrative.objects.filter(pk=row.pk).update(failure_reason=reason)
        row.failure_reason = reason
        return _row_view(row)
    values = {
        "source": key["provider"] if not reason else Narrative.Source.FALLBACK,
        "text": text,
        "readout_numbers": numbers,
        "failure_reason": reason,
        "created_at": timezone.now(),
    }
    try:
        with transaction.atomic():
            row, created = Narrative.objects.update_or_create(**key, defaults=values)
            if not created:  # created_at is auto_now_add: set the regeneration time explicitly
                Narrative.objects.filter(pk=row.pk).update(created_at=values["created_at"])
                row.created_at = values["created_at"]
    except IntegrityError:  # a concurrent request stored the same key first
        row = Narrative.objects.get(**key)
    return _row_view(row)
