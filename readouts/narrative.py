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
import math
import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from readouts.formatting import p_value_exact as format_p
from readouts.models import Narrative
from readouts.selectors import Readout

logger = logging.getLogger(__name__)

PROMPT_VERSION = "v1"
SIGNIFICANCE_ALPHA = 0.05
PROVIDERS = ("openai", "anthropic")

SYSTEM_PROMPT = (
    "You summarise A/B test readouts for product teams in 3 to 5 plain sentences. "
    "Use ONLY the numbers given in the readout, copied exactly as written there; never compute, round "
    "or invent other numbers, and do not mention dates. Say what the data suggests, never that it proves "
    "anything. If p is 0.05 or more, say the data does not show a clear difference. Mention every warning."
)


# --- Numbers as they are stated (shared by the fallback, the prompt and the guard) ---------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f} percentage points"


def readout_numbers(readout: Readout) -> dict:
    """The numbers a narrative may state, formatted once; stored with each narrative and fingerprinted."""
    return {
        "experiment": readout.experiment_slug,
        "metric": readout.metric,
        "variants": [
            {
                "key": v.key,
                "name": v.name,
                "is_control": v.is_control,
                "exposed_users": v.exposures,
                "converted_users": v.conversions,
                "rate": _pct(v.rate.rate),
                "rate_ci_95": [_pct(v.rate.ci.low), _pct(v.rate.ci.high)] if v.rate.ci else None,
            }
            for v in readout.variants
        ],
        "comparisons": [
            {
                "variant": c.variant,
                "control": c.control,
                "difference": _pp(c.diff),
                "difference_ci_95": [_pp(c.diff_ci.low), _pp(c.diff_ci.high)] if c.diff_ci else None,
                "lift": "undefined" if c.lift is None else f"{c.lift:+.2f}%",
                "lift_note": c.lift_reason,
                "z": "n/a" if c.z is None else f"{c.z:.3f}",
                "p_value": format_p(c.p_value),
                "test_note": c.test_reason,
            }
            for c in readout.comparisons
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


def _comparison_sentence(c) -> str:
    if c.diff is None:
        return f"{c.variant} cannot be compared with {c.control}: {c.test_reason}"
    lift = f"{c.lift_reason}." if c.lift is None else f"The relative lift is {c.lift:+.2f}%."
    text = (
        f"{c.variant} differs from {c.control} by {_pp(c.diff)} "
        f"(95% CI {_pp(c.diff_ci.low)} to {_pp(c.diff_ci.high)}). {lift}"
    )
    if c.p_value is None:
        return f"{text} {c.test_reason}"
    if c.p_value < SIGNIFICANCE_ALPHA:
        verdict = "suggests a real difference, though it does not prove one"
    else:
        verdict = "does not show a clear difference"
    return f"{text} The two-sided z-test gives z = {c.z:.3f}, p = {format_p(c.p_value)}, which {verdict}."


def narrative_fallback_text(readout: Readout) -> str:
    """A plain summary built only from the readout numbers (no provider involved)."""
    parts = [f"Readout of {readout.experiment_name} on metric {readout.metric}."]
    for v in readout.variants:
        label = f"{v.key} (control)" if v.is_control else v.key
        if v.exposures == 0:
            parts.append(f"{label} has no exposed users yet.")
        else:
            parts.append(f"{label}: {v.conversions} of {v.exposures} exposed users converted ({_pct(v.rate.rate)}).")
    parts += [_comparison_sentence(c) for c in readout.comparisons]
    if readout.warnings:
        parts.append("Warnings: " + " ".join(w["message"] for w in readout.warnings))
    else:
        parts.append("No data-quality warnings.")
    return " ".join(parts)


# --- Guard: every number stated must be a number of the readout ----------------------------------

NUMBER_RE = re.compile(r"(?<![\w.])[-+\u2212]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Numbers a narrative may state without them being readout values: the confidence level and the
# conventional thresholds it may cite.
ALLOWED_CONSTANTS = (95.0, 0.05, 0.001, 0.0)


def _strings(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _strings(value)
    elif isinstance(obj, bool) or obj is None:
        return
    else:
        yield str(obj)


def _identifiers(numbers: dict) -> list[str]:
    names = [numbers.get("experiment", ""), numbers.get("experiment_name", ""), numbers.get("metric", "")]
    for v in numbers.get("variants", []):
        names += [v["key"], v["name"]]
    return sorted({n for n in names if n}, key=len, reverse=True)


def _parse(token: str) -> tuple[float, int, bool]:
    """(absolute value, decimals written, scientific?) of a number token."""
    text = token.lstrip("+-\u2212").replace(",", "")
    scientific = "e" in text.lower()
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return abs(float(text)), decimals, scientific


def _allowed_values(numbers: dict) -> list[float]:
    values = set(ALLOWED_CONSTANTS)
    for s in _strings({k: v for k, v in numbers.items() if k not in ("experiment", "experiment_name", "metric")}):
        for token in NUMBER_RE.findall(_strip_identifiers(s, _identifiers(numbers))):
            values.add(_parse(token)[0])
    return sorted(values)


def _strip_identifiers(text: str, identifiers: list[str]) -> str:
    for name in identifiers:
        text = text.replace(name, " ")
    return text


def _matches(value: float, decimals: int, scientific: bool, allowed: float) -> bool:
    if scientific or allowed and abs(allowed) < 1e-4:
        return math.isclose(value, allowed, rel_tol=0.01, abs_tol=0.0) or value == allowed
    # Written with `decimals` places: it matches a readout value rounded to that many places.
    return abs(round(allowed, decimals) - value) < 0.5 * 10 ** (-decimals - 3) or abs(allowed - value) < 1e-9


def narrative_guard(text: str, numbers: dict) -> list[str]:
    """The numbers stated in ``text`` that are not readout numbers (empty list: the text may be shown)."""
    allowed = _allowed_values(numbers)
    bad = []
    for token in NUMBER_RE.findall(_strip_identifiers(text, _identifiers(numbers))):
        value, decimals, scientific = _parse(token)
        if not any(_matches(value, decimals, scientific, a) for a in allowed):
            bad.append(token)
    return bad


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


def _fallback_view(readout: Readout, *, pending: bool = False, reason: str = "") -> NarrativeView:
    return NarrativeView(
        text=narrative_fallback_text(readout),
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


def _numbers_and_key(readout: Readout) -> tuple[dict, dict]:
    provider, model, _, _ = provider_settings()
    numbers = {**readout_numbers(readout), "experiment_name": readout.experiment_name}
    key = {
        "experiment_id": readout.experiment_id,
        "metric": readout.metric,
        "fingerprint": fingerprint(numbers),
        "provider": provider,
        "model": model,
        "prompt_version": PROMPT_VERSION,
    }
    return numbers, key


def narrative_for_page(*, readout: Readout) -> NarrativeView:
    """What the readout page shows at once: the cache or the fallback. Never calls a provider."""
    numbers, key = _numbers_and_key(readout)
    if key["provider"] == "none":
        return _fallback_view(readout)
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
    return _fallback_view(readout, pending=True)


def narrative_generate(*, readout: Readout, force: bool = False) -> NarrativeView:
    """The narrative for the current numbers: from the cache, or one provider call (``force``: call again).

    A failure stores the deterministic fallback for these numbers (so they never cost a second call),
    except when it replaces a good AI narrative on ``force``: then the last good text is kept and the
    failure recorded on it.
    """
    numbers, key = _numbers_and_key(readout)
    if key["provider"] == "none":
        return _fallback_view(readout)
    row = Narrative.objects.filter(**key).first()
    if row is not None and not force:
        return _row_view(row)
    lock = f"readouts:narrative:{key['fingerprint']}:{key['provider']}:{key['model']}"
    if not cache.add(lock, 1, timeout=int(settings.SIGNALDASH_AI_TIMEOUT_S) + 5):
        return _fallback_view(readout, pending=True, reason="a narrative for these numbers is being generated")
    try:
        _, _, api_key, base_url = provider_settings()
        text, reason = _ask(
            provider=key["provider"], model=key["model"], api_key=api_key, base_url=base_url, numbers=numbers
        )
        return _store(readout=readout, key=key, numbers=numbers, row=row, text=text, reason=reason)
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
        "text": text or narrative_fallback_text(readout),
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
