"""One verdict per treatment, computed once, and what the page says around it (next step, view sentence).

Every place that summarises a result reads the same ``Verdict``: the readout page and its JSON
(``verdicts``), the scorecard, the comparisons table, the experiment list, the CSV, the bundle, the decide
and review pages, the narrative and the notifications. The rules (docs/metrics.md, "The verdict"):

1. **untrustworthy** — a sample-ratio mismatch or any health check that fails; nothing else is said.
2. **won** / **lost** — the primary metric's outcome (``better`` / ``worse``, read with its direction, on the
   Holm-adjusted p, or the always-valid p under sequential analysis).
3. **inconclusive** — anything else.

``blocked_by`` lists the ship-guard problem codes that hold for the treatment (``readouts.governance``); a
winner that cannot ship says why in its headline: "Won — ship blocked by guardrail refund".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from readouts import formatting, stats
from readouts.labels import warning_label
from readouts.selectors import MetricComparison, MetricReadout, Readout, readout_timeseries

WON, LOST, INCONCLUSIVE, UNTRUSTWORTHY = "won", "lost", "inconclusive", "untrustworthy"
LABELS = (WON, LOST, INCONCLUSIVE, UNTRUSTWORTHY)
TITLES = {WON: "Won", LOST: "Lost", INCONCLUSIVE: "Inconclusive", UNTRUSTWORTHY: "Untrustworthy"}
TONES = {WON: "good", LOST: "bad", INCONCLUSIVE: "neutral", UNTRUSTWORTHY: "warn"}


@dataclass(frozen=True)
class Verdict:
    variant: str
    label: str  # won | lost | inconclusive | untrustworthy
    reason: str
    blocked_by: tuple[str, ...] = ()  # ship-guard problem codes that hold (readouts.governance.SHIP_PROBLEM_CODES)
    guardrails_worse: tuple[str, ...] = field(default=(), compare=False)  # metric keys, for the headline
    failing: tuple[str, ...] = field(default=(), compare=False)  # failing check codes (untrustworthy)

    @property
    def title(self) -> str:
        """The label for people: 'Won', 'Untrustworthy'."""
        return TITLES[self.label]

    @property
    def tone(self) -> str:
        """CSS tone (good | bad | neutral | warn); never the only signal, the words say it."""
        return TONES[self.label]

    @property
    def ship_blocked(self) -> bool:
        return self.label == WON and bool(self.blocked_by)

    @property
    def block_phrase(self) -> str:
        """What blocks a winner's ship: 'ship blocked by guardrail refund' ('' unless a blocked winner)."""
        if not self.ship_blocked:
            return ""
        return f"ship blocked {_blocks_phrase(self.blocked_by, self.guardrails_worse)}"

    @property
    def headline(self) -> str:
        """The title, plus what blocks a winner's ship: 'Won — ship blocked by guardrail refund'."""
        return f"{self.title} — {self.block_phrase}" if self.ship_blocked else self.title

    def as_json(self) -> dict:
        return {
            "variant": self.variant,
            "label": self.label,
            "reason": self.reason,
            "blocked_by": list(self.blocked_by),
        }


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _blocks_phrase(codes: tuple[str, ...], guardrails: tuple[str, ...]) -> str:
    """Why a winner cannot ship, as the end of 'ship blocked …'."""
    parts = []
    if "guardrail_worse" in codes:
        parts.append(f"by guardrail{'s' if len(guardrails) > 1 else ''} {_and(list(guardrails) or ['metrics'])}")
    if "sample_not_reached" in codes:
        parts.append("until the planned sample is reached")
    others = [warning_label(c).lower() for c in codes if c not in ("guardrail_worse", "sample_not_reached")]
    if others:
        parts.append(f"by {_and(others)}")
    return ", and ".join(parts)


# --- the rules -------------------------------------------------------------------------------------
def _p_phrase(p: float | None) -> str:
    text = formatting.p_value(p)
    return text if text.startswith("<") else f"= {text}"


def lift_phrase(c: MetricComparison, alpha: float, *, adjusted: bool) -> str:
    """'+11.60% (95% CI +5.00% to +18.00%), Holm-adjusted p < 0.001 (alpha 0.05)'."""
    ci = c.rel.rel_lift_ci
    rel = c.rel.rel_lift if c.rel.rel_lift is not None else (None if c.lift is None else c.lift / 100.0)
    interval = f" (95% CI {formatting.signed_pct(ci.low)} to {formatting.signed_pct(ci.high)})" if ci else ""
    use_adjusted = adjusted and c.p_value_adjusted is not None
    p = c.p_value_adjusted if use_adjusted else c.p_value
    which = "Holm-adjusted p" if use_adjusted else "p"
    return f"{formatting.signed_pct(rel)}{interval}, {which} {_p_phrase(p)} (alpha {alpha:g})"


def verdict_for(
    *,
    comparison: MetricComparison,
    primary: MetricReadout,
    alpha: float,
    failing: list[str],
    blocked_by: list[str],
    guardrails_worse: list[str],
) -> Verdict:
    """The verdict of one treatment (pure: everything it reads is given)."""
    c = comparison
    phrase = f"{primary.key} {lift_phrase(c, alpha, adjusted=primary.in_family)}"
    common = {"blocked_by": tuple(blocked_by), "guardrails_worse": tuple(guardrails_worse), "failing": tuple(failing)}
    if failing:
        names = ", ".join(failing)
        reason = f"Do not act on these numbers: {names} failed (see the checks). As measured, {phrase}."
        return Verdict(c.variant, UNTRUSTWORTHY, reason, **common)
    if c.outcome == stats.BETTER:
        reason = f"{primary.key} improved: {phrase}."
        if guardrails_worse:
            reason += f" But guardrail {_and(guardrails_worse)} got worse, so shipping needs an override."
        if "sample_not_reached" in blocked_by:
            reason += " The planned sample is not reached yet (fixed-horizon analysis)."
        return Verdict(c.variant, WON, reason, **common)
    if c.outcome == stats.WORSE:
        return Verdict(c.variant, LOST, f"{primary.key} got worse: {phrase}.", **common)
    reason = f"No clear difference on {primary.key} yet: {phrase}." if c.diff is not None else c.test_reason
    return Verdict(c.variant, INCONCLUSIVE, reason, **common)


def _primary(readout: Readout) -> MetricReadout:
    return next((r for r in readout.results if r.role == "primary"), readout.results[0])


def _failing(readout: Readout, governance) -> list[str]:
    failing = [c.code for c in governance.checks if c.status == "fail"] if governance is not None else []
    if readout.srm.mismatch and "srm" not in failing:
        failing.insert(0, "srm")
    return failing


def verdicts_get(readout: Readout, *, governance=None) -> list[Verdict]:
    """One verdict per treatment of the readout's primary metric.

    ``governance`` (``readouts.governance.Governance``) gives the failing checks and the ship guard; without
    it, it is computed (three queries).
    """
    from readouts.governance import governance_get, ship_problems_get  # governance imports selectors too

    if governance is None:
        from experiments.models import Experiment

        governance = governance_get(experiment=Experiment.objects.get(pk=readout.experiment_id), readout=readout)
    primary = _primary(readout)
    failing = _failing(readout, governance)
    out = []
    for c in primary.comparisons:
        problems = ship_problems_get(readout=readout, governance=governance, variant=c.variant)
        worse = [
            r.key
            for r in readout.results
            if r.role == "guardrail"
            for g in r.comparisons
            if g.variant == c.variant and g.outcome == stats.WORSE
        ]
        out.append(
            verdict_for(
                comparison=c,
                primary=primary,
                alpha=readout.alpha,
                failing=failing,
                blocked_by=[p.code for p in problems],
                guardrails_worse=worse,
            )
        )
    return out


def experiment_verdicts_get(*, experiment) -> list[Verdict]:
    """The verdicts of an experiment's primary metric, now (readout and governance: a few queries)."""
    from readouts.selectors import readout_get

    return verdicts_get(readout_get(experiment=experiment))


def verdicts_json(verdicts: list[Verdict]) -> list[dict]:
    return [v.as_json() for v in verdicts]


def by_variant(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.variant: v for v in verdicts}


def untrustworthy(verdicts: list[Verdict]) -> bool:
    return any(v.label == UNTRUSTWORTHY for v in verdicts)


def comparison_reading(c: MetricComparison, verdict: Verdict | None, *, has_warnings: bool) -> str:
    """The comparisons table's 'Reading' column, never contradicting the verdict."""
    if verdict is not None and verdict.label == UNTRUSTWORTHY:
        return (
            f"Untrustworthy: {_and(list(verdict.failing)) or 'a health check'} failed, so this difference "
            "cannot be read as an effect."
        )
    if c.p_value is None:
        return c.test_reason
    warned = "; the warnings above apply" if has_warnings else ""
    if c.outcome == stats.BETTER:
        blocked = f"; {verdict.block_phrase}" if verdict is not None and verdict.ship_blocked else ""
        return f"Better: a real improvement is likely (not proof){warned}{blocked}."
    if c.outcome == stats.WORSE:
        return f"Worse: a real deterioration is likely{warned}."
    return "Inconclusive: the data is consistent with no effect."


def comparison_rows(readout: Readout, verdicts: list[Verdict]) -> list[tuple[MetricComparison, str]]:
    """The selected metric's comparisons with their reading (the ship block only on the primary metric)."""
    found = by_variant(verdicts)
    primary = readout.selected.role == "primary"
    rows = []
    for c in readout.comparisons:
        v = found.get(c.variant)
        if not primary and v is not None and v.label != UNTRUSTWORTHY:
            v = None
        rows.append((c, comparison_reading(c, v, has_warnings=bool(readout.warnings))))
    return rows


def result_summary(verdicts: list[Verdict], readout: Readout) -> str:
    """One line per experiment for the list: 'carousel: Untrustworthy (sample ratio mismatch)'."""
    comparisons = {c.variant: c for c in _primary(readout).comparisons}
    parts = []
    for v in verdicts:
        c = comparisons.get(v.variant)
        if v.label == UNTRUSTWORTHY:
            detail = ", ".join(warning_label(f).lower() for f in v.failing)
        elif c is not None and c.rel.rel_lift is not None:
            detail = formatting.signed_pct(c.rel.rel_lift, 1)
        else:
            detail = "lift n/a"
        parts.append(f"{v.variant}: {v.headline} ({detail})")
    return "; ".join(parts)


def overall_label(verdicts: list[Verdict]) -> str:
    """The experiment's label for filters: untrustworthy, else lost, else won, else inconclusive ('' if none)."""
    labels = {v.label for v in verdicts}
    return next((label for label in (UNTRUSTWORTHY, LOST, WON, INCONCLUSIVE) if label in labels), "")


# --- the next step and the view (what the page leads with after the verdict) -----------------------------
VIEW_SENTENCES = {
    "fixed": (
        "Fixed-horizon view: the p-values and 95% intervals are valid once, at the planned sample. "
        "Decide only when the plan is reached; looking daily and stopping early inflates false wins."
    ),
    "sequential": (
        "Always-valid (sequential) view: the intervals stay valid at every look, so you may stop as soon as a "
        "result is clear; an inconclusive result means no effect only once the planned sample is reached."
    ),
}


@dataclass(frozen=True)
class NextStep:
    text: str
    link_label: str = ""
    url: str = ""


def _sequential_running_text(readout: Readout, verdicts: list[Verdict]) -> str | None:
    """Under sequential analysis: keep collecting while inconclusive below the plan; None when ready to decide."""
    if any(v.label in (WON, LOST) for v in verdicts):
        return None  # a clear result at the always-valid interval
    plan = readout.plan
    if plan.progress is None:
        return (
            "Keep collecting: no difference yet, and without a power plan there is no planned sample to say when "
            "no effect can be concluded."
        )
    if plan.progress < 1:
        return (
            f"Keep collecting: no difference yet; the plan's sample is not reached (the smallest arm has "
            f"{plan.progress:.0%} of the planned {plan.users_per_arm:,} users)."
        )
    return None


def running_readiness(readout: Readout, verdicts: list[Verdict]) -> str | None:
    """Why a running experiment is ready to decide ('' when a fixed-horizon one has no power plan), else None.

    None: untrustworthy, or keep collecting (fixed below the planned sample; sequential and inconclusive below
    it). The next step on the page and the ``experiment.result_ready`` notification both read this.
    """
    if untrustworthy(verdicts):
        return None
    plan = readout.plan
    if readout.analysis == "sequential":
        if _sequential_running_text(readout, verdicts) is not None:
            return None
        if any(v.label in (WON, LOST) for v in verdicts):
            return "a clear result at the always-valid interval"
        return "no detectable effect of the planned size"
    if plan.progress is None:
        return ""
    return "the planned sample is reached" if plan.progress >= 1 else None


def failing_checks(readout: Readout, governance) -> list[str]:
    """The codes of the health checks that fail (a sample-ratio mismatch first): what makes it untrustworthy."""
    return _failing(readout, governance)


def _running_step(readout: Readout, *, user, verdicts: list[Verdict], admin_url: str) -> NextStep:
    plan = readout.plan
    if untrustworthy(verdicts):
        text = "Fix the data problem before deciding: the failing check makes these numbers unusable."
        if user.has_perm("experiments.end_experiment"):
            return NextStep(text, "Admin page", admin_url)
        return NextStep(text)
    why = running_readiness(readout, verdicts)
    if why is None and readout.analysis == "sequential":
        return NextStep(_sequential_running_text(readout, verdicts))
    if why is None:
        return NextStep(
            f"Keep collecting: the smallest arm has {plan.progress:.0%} of the planned "
            f"{plan.users_per_arm:,} users. Decide at the planned sample, not before."
        )
    ready = f"Ready to decide ({why})" if readout.analysis == "sequential" else "Ready to decide"
    if user.has_perm("experiments.end_experiment"):
        return NextStep(f"{ready} → end for readout.", "End for readout (admin)", admin_url)
    return NextStep(f"{ready}: ops end it for readout.")


def readout_next_step(readout: Readout, *, user, verdicts: list[Verdict]) -> NextStep:
    """What the viewer can do next, for their role (links go to the admin change page or the decide page)."""
    from django.urls import reverse  # presentation helper; the readout itself needs no URLs

    status = readout.experiment_status
    admin_url = reverse("admin:experiments_experiment_change", args=[readout.experiment_id])
    decide_url = reverse("experiments:decide", args=[readout.experiment_slug])
    if status in ("draft", "review"):
        return NextStep(
            "Not started: nobody has been exposed yet.",
            "Review page" if status == "review" else "",
            reverse("experiments:review_detail", args=[readout.experiment_slug]) if status == "review" else "",
        )
    if status in ("shipped", "killed"):
        return NextStep("Decided: the decision and the numbers it was based on are on the timeline.")
    if status == "running":
        return _running_step(readout, user=user, verdicts=verdicts, admin_url=admin_url)
    if user.has_perm("experiments.ship_experiment"):
        worse = sorted({g for v in verdicts for g in v.guardrails_worse})
        if untrustworthy(verdicts):
            text = "Do not ship on these numbers until the failing check is explained; killing is always possible."
        elif worse:
            text = (
                f"Shipping is blocked: guardrail {_and(worse)} got worse. Kill, or ship with an override "
                "reason (it is recorded with the decision)."
            )
        else:
            text = "Ready to decide → ship or kill."
        return NextStep(text, "Ship or kill", decide_url)
    return NextStep("Waiting for ops to decide (ship or kill).")


def readout_page_get(*, readout: Readout, user, governance=None) -> dict:
    """What the readout page shows around the numbers: verdicts, next step, view, decision, series."""
    from experiments.models import Decision

    verdicts = verdicts_get(readout, governance=governance)
    bounds = [
        abs(b)
        for r in readout.scorecard
        for c in r.comparisons
        if c.rel.rel_lift_ci is not None
        for b in (c.rel.rel_lift_ci.low, c.rel.rel_lift_ci.high)
    ]
    return {
        "verdicts": verdicts,
        "verdict_by_variant": by_variant(verdicts),
        "untrustworthy": untrustworthy(verdicts),
        "comparison_rows": comparison_rows(readout, verdicts),
        "next_step": readout_next_step(readout, user=user, verdicts=verdicts),
        "view_sentence": VIEW_SENTENCES.get(readout.analysis, ""),
        "decision": Decision.objects.filter(experiment_id=readout.experiment_id)
        .select_related("decided_by", "shipped_variant")
        .first()
        if readout.experiment_status in ("shipped", "killed")
        else None,
        "scorecard_scale": max(bounds, default=0.0) or 0.1,
        "timeseries": readout_timeseries(readout=readout),
    }
