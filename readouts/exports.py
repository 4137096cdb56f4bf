"""Readout presentation for machines and archives: the API JSON, CSV, the Markdown summary and the bundle.

The JSON keeps exact numbers (fractions, raw p-values); the Markdown summary is for people and
formats through ``readouts.formatting``.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from experiments.models import Experiment
from readouts import formatting, stats
from readouts.narrative import narrative_fallback_text
from readouts.selectors import MetricComparison, MetricReadout, Readout, VariantReadout, readout_get
from readouts.verdicts import UNTRUSTWORTHY, Verdict, verdicts_get, verdicts_json

if TYPE_CHECKING:
    from readouts.dimensions import DimensionBreakdown
    from readouts.governance import Governance


def _interval(i: stats.Interval | None) -> list[float] | None:
    return i.as_list() if i is not None else None


# --- JSON ------------------------------------------------------------------------------------------
def _variant_json(v: VariantReadout) -> dict:
    return {
        "key": v.key,
        "name": v.name,
        "is_control": v.is_control,
        "weight": v.weight,
        "exposures": v.exposures,
        "conversions": v.conversions,
        "rate": v.rate.rate,
        "rate_ci": _interval(v.rate.ci),
        "n": v.sums.n,
        "sum": v.sums.sum,
        "sum_squares": v.sums.sum_squares,
        "mean": v.summary.mean,
        "sd": v.summary.sd,
        **(_ratio_json(v) if v.ratio is not None else {}),
        **({"note": v.rate.reason} if v.rate.reason else {}),
    }


def _ratio_json(v: VariantReadout) -> dict:
    """A ratio variant: n and the five sums of per-user numerator m and denominator d; mean = Σm/Σd."""
    r = v.ratio
    return {
        "n": r.n,
        "numerator_sum": r.numerator_sum,
        "numerator_sum_squares": r.numerator_sum_squares,
        "denominator_sum": r.denominator_sum,
        "denominator_sum_squares": r.denominator_sum_squares,
        "sum_products": r.sum_products,
        "mean": v.summary.mean,
        **({"mean_note": v.summary.reason} if v.summary.reason else {}),
    }


def _funnel_steps_json(r: MetricReadout) -> list[dict]:
    """Per step, in order: the share of exposed users reaching it per variant, and each step compared as binary."""
    return [
        {
            "event": step.event,
            "variants": [
                {"key": v.key, "n": v.exposures, "reached": v.conversions, "share": v.rate.rate}
                for v in step.result.variants
            ],
            "comparisons": [
                {
                    "variant": c.variant,
                    "p_value": c.p_value,
                    "rel_lift": c.rel.rel_lift,
                    "rel_lift_ci": _interval(c.rel.rel_lift_ci),
                }
                for c in step.result.comparisons
            ],
        }
        for step in r.steps or []
    ]


def _definition_json(r: MetricReadout) -> dict:
    """The definition computed (frozen when approved), ``cap_applied``, and a funnel's ``steps``."""
    return {
        "definition": r.definition.to_dict() if r.definition is not None else None,
        "cap_applied": r.cap_applied,
        **({"steps": _funnel_steps_json(r)} if r.kind == "funnel" else {}),
    }


def _cuped_json(c: stats.Cuped | None) -> dict | None:
    if c is None:
        return None
    return {
        "theta": c.theta,
        "rel_lift": c.rel_lift,
        "rel_lift_ci": _interval(c.rel_lift_ci),
        "p_value": c.p_value,
        "variance_reduction": c.variance_reduction,
        **({"note": c.reason} if c.reason else {}),
    }


def _comparison_json(c: MetricComparison, kind: str) -> dict:
    return {
        "variant": c.variant,
        "control": c.control,
        "diff": c.diff,
        "diff_ci": _interval(c.diff_ci),
        "lift": c.lift,
        "z": c.z if kind in (stats.BINARY, "funnel") else None,
        **({"t": c.z, "df": c.df} if kind in (stats.MEAN, stats.RATIO) else {}),
        "p_value": c.p_value,
        "rel_lift": c.rel.rel_lift,
        "rel_lift_ci": _interval(c.rel.rel_lift_ci),
        "p_value_adjusted": c.p_value_adjusted,
        "sequential": {
            "rel_lift_ci": _interval(c.sequential.rel_lift_ci),
            "p_value": c.sequential.p_value,
            "p_value_adjusted": c.sequential_p_adjusted,
        },
        "bayes": {
            "chance_to_beat": c.bayes.chance_to_beat,
            "expected_loss": c.bayes.expected_loss,
            "rel_lift_ci": _interval(c.bayes.rel_lift_ci),
        },
        "cuped": _cuped_json(c.cuped),
        "outcome": c.outcome,
        **({"lift_note": c.lift_reason} if c.lift_reason else {}),
        **({"note": c.test_reason} if c.test_reason else {}),
    }


def scorecard_json(readout: Readout) -> list[dict]:
    return [
        {
            "metric": r.key,
            "role": r.role,
            "kind": r.kind,
            "direction": r.direction,
            "comparisons": [
                {
                    "variant": c.variant,
                    "rel_lift": c.rel.rel_lift,
                    "rel_lift_ci": _interval(c.rel.rel_lift_ci),
                    "p_value": c.p_value,
                    "p_value_adjusted": c.p_value_adjusted,
                    "outcome": c.outcome,
                }
                for c in r.comparisons
            ],
        }
        for r in readout.scorecard
    ]


def _governance(readout: Readout, governance: Governance | None) -> Governance:
    """The given checks and deviations, or computed now (two queries, plus one for the experiment)."""
    if governance is not None:
        return governance
    from readouts.governance import governance_get  # governance imports this module's siblings, not back

    return governance_get(experiment=Experiment.objects.get(pk=readout.experiment_id), readout=readout)


def readout_as_json(
    readout: Readout,
    *,
    governance: Governance | None = None,
    dimension: DimensionBreakdown | None = None,
    decision: dict | None = None,
) -> dict:
    """The API body (and the decision snapshot, which adds ``decision``)."""
    governance = _governance(readout, governance)
    selected = readout.selected
    plan = readout.plan
    verdicts = verdicts_get(readout, governance=governance)
    return {
        "experiment": {
            "slug": readout.experiment_slug,
            "name": readout.experiment_name,
            "status": readout.experiment_status,
        },
        "verdicts": verdicts_json(verdicts),
        "metric": readout.metric,
        "metrics": readout.metrics,
        "metric_kind": selected.kind,
        **_definition_json(selected),
        "metric_role": selected.role,
        "direction": selected.direction,
        "alpha": readout.alpha,
        "analysis": readout.analysis,
        "correction": {"method": "holm", "family_size": readout.family_size},
        "computed_at": readout.computed_at.isoformat(),
        "variants": [_variant_json(v) for v in selected.variants],
        "comparisons": [_comparison_json(c, selected.kind) for c in selected.comparisons],
        "scorecard": scorecard_json(readout),
        "plan": {
            "users_per_arm": plan.users_per_arm,
            "expected_days": plan.expected_days,
            "progress": plan.progress,
            **({"note": plan.reason} if plan.reason else {}),
        },
        "warnings": readout.warnings,
        "srm": {
            "chi2": readout.srm.chi2,
            "p_value": readout.srm.p_value,
            **({"note": readout.srm.reason} if readout.srm.reason else {}),
        },
        "data_quality": {
            "conversions_without_exposure": selected.late + selected.unexposed,
            "variant_conflicts": readout.variant_conflicts,
        },
        "checks": [c.as_json() for c in governance.checks],
        "deviations": [d.as_json() for d in governance.deviations],
        **({"dimension": dimension.as_json()} if dimension is not None else {}),
        **({"decision": decision} if decision is not None else {}),
    }


# --- CSV -------------------------------------------------------------------------------------------
CSV_COLUMNS = [
    "metric",
    "role",
    "kind",
    "direction",
    "variant",
    "name",
    "is_control",
    "weight",
    "exposures",
    "conversions",
    "rate",
    "rate_ci_low",
    "rate_ci_high",
    "mean",
    "sd",
    "diff_vs_control",
    "diff_ci_low",
    "diff_ci_high",
    "lift_percent",
    "rel_lift",
    "rel_lift_ci_low",
    "rel_lift_ci_high",
    "z",
    "p_value",
    "p_value_adjusted",
    "outcome",
    "verdict",  # the treatment's verdict (readouts.verdicts), on each of its rows; blank for the control
]


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in untrusted text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _blank(x) -> str:
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def _low(i: stats.Interval | None) -> float | None:
    return i.low if i else None


def _high(i: stats.Interval | None) -> float | None:
    return i.high if i else None


def _csv_row(r: MetricReadout, v: VariantReadout, c: MetricComparison | None, verdict: Verdict | None) -> list:
    return [
        _csv_safe(r.key),
        r.role,
        r.kind,
        r.direction,
        _csv_safe(v.key),
        _csv_safe(v.name),
        "true" if v.is_control else "false",
        v.weight,
        v.exposures,
        v.conversions,
        _blank(v.rate.rate),
        _blank(_low(v.rate.ci)),
        _blank(_high(v.rate.ci)),
        _blank(v.summary.mean),
        _blank(v.summary.sd),
        *(
            [""] * 11
            if c is None
            else [
                _blank(c.diff),
                _blank(_low(c.diff_ci)),
                _blank(_high(c.diff_ci)),
                _blank(c.lift),
                _blank(c.rel.rel_lift),
                _blank(_low(c.rel.rel_lift_ci)),
                _blank(_high(c.rel.rel_lift_ci)),
                _blank(c.z),
                _blank(c.p_value),
                _blank(c.p_value_adjusted),
                c.outcome,
            ]
        ),
        "" if verdict is None else verdict.label,
    ]


def readout_csv(readout: Readout, *, verdicts: list[Verdict] | None = None) -> str:
    """One row per metric × variant: the selected metric first, then the rest of the scorecard."""
    verdicts = verdicts_get(readout) if verdicts is None else verdicts
    found = {v.variant: v for v in verdicts}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    ordered = [readout.selected, *[r for r in readout.results if r.key != readout.metric]]
    for r in ordered:
        by_variant = {c.variant: c for c in r.comparisons}
        for v in r.variants:
            writer.writerow(_csv_row(r, v, by_variant.get(v.key), None if v.is_control else found.get(v.key)))
    return buf.getvalue()


# --- Markdown (for people) -------------------------------------------------------------------------
OUTCOME_LABEL = {"better": "better", "worse": "worse", "inconclusive": "inconclusive"}
VIEW_SENTENCE = {
    "fixed": "Fixed-horizon analysis: decide only once the planned sample is reached.",
    "sequential": "Sequential (always-valid) analysis: you may look daily; intervals stay valid at every look.",
}


def _verdicts_markdown(verdicts: list[Verdict]) -> list[str]:
    lines = ["## Verdict", ""]
    lines += [f"- **{v.variant}: {v.headline}.** {v.reason}" for v in verdicts] or ["- nothing to judge yet"]
    return [*lines, ""]


def _scorecard_markdown(readout: Readout, *, trusted: bool = True) -> list[str]:
    lines = [
        "## Scorecard",
        "",
        f"Holm correction over {readout.family_size} comparison(s) (every treatment × primary and secondary "
        "metric); guardrails are judged on their raw p-value.",
        "",
        "| Metric | Role | Treatment | Relative lift | 95% CI | p | p (Holm) | Outcome |",
        "|---|---|---|---:|---|---:|---:|---|",
    ]
    for r in readout.scorecard:
        for c in r.comparisons:
            ci = c.rel.rel_lift_ci
            ci_text = f"{formatting.signed_pct(ci.low)} to {formatting.signed_pct(ci.high)}" if ci else "n/a"
            lines.append(
                f"| {r.key} ({r.kind}, {r.direction}) | {r.role} | {c.variant} "
                f"| {formatting.signed_pct(c.rel.rel_lift)}"
                f" | {ci_text} | {formatting.p_value(c.p_value)} | {formatting.p_value(c.p_value_adjusted)}"
                f" | {OUTCOME_LABEL.get(c.outcome, c.outcome) if trusted else UNTRUSTWORTHY} |"
            )
    return lines


def _variants_markdown(r: MetricReadout) -> list[str]:
    if r.kind == stats.BINARY:
        lines = [
            "| Variant | Control | Exposed users | Converted users | Rate | 95% CI (Wilson) |",
            "|---|---|---:|---:|---:|---|",
        ]
        for v in r.variants:
            ci = v.rate.ci
            ci_text = f"{formatting.pct(ci.low)} – {formatting.pct(ci.high)}" if ci else "n/a"
            lines.append(
                f"| {v.key} ({v.name}) | {'yes' if v.is_control else ''} | {formatting.count(v.exposures)} "
                f"| {formatting.count(v.conversions)} | {formatting.pct(v.rate.rate)} | {ci_text} |"
            )
        return lines
    lines = ["| Variant | Control | Exposed users | Mean per user | SD |", "|---|---|---:|---:|---:|"]
    for v in r.variants:
        lines.append(
            f"| {v.key} ({v.name}) | {'yes' if v.is_control else ''} | {formatting.count(v.exposures)} "
            f"| {formatting.number(v.summary.mean)} | {formatting.number(v.summary.sd)} |"
        )
    return lines


def _comparison_markdown(c: MetricComparison, kind: str, *, trusted: bool = True) -> str:
    if c.diff is None:
        return f"- {c.variant} vs {c.control}: no comparison — {c.test_reason or c.lift_reason}"
    diff_ci = f"{formatting.effect(c.diff_ci.low, kind=kind)} to {formatting.effect(c.diff_ci.high, kind=kind)}"
    rel = c.rel
    rel_text = (
        f"relative lift {formatting.signed_pct(rel.rel_lift)} (95% CI {formatting.signed_pct(rel.rel_lift_ci.low)} to "
        f"{formatting.signed_pct(rel.rel_lift_ci.high)})"
        if rel.rel_lift is not None and rel.rel_lift_ci is not None
        else (rel.reason or "relative lift n/a")
    )
    test = "z" if kind == stats.BINARY else "t"
    stat = "n/a" if c.z is None else f"{c.z:.3f}"
    return (
        f"- {c.variant} vs {c.control}: difference {formatting.effect(c.diff, kind=kind)} (95% CI {diff_ci}), "
        f"{rel_text}, {test} = {stat}, p {formatting.p_equals(c.p_value)}, "
        f"Holm-adjusted p {formatting.p_equals(c.p_value_adjusted)}, outcome: {c.outcome if trusted else UNTRUSTWORTHY}"
        + (f" — {c.test_reason}" if c.test_reason else "")
    )


def _decision_markdown(decision: dict | None) -> list[str]:
    if not decision:
        return []
    lines = [
        "## Decision",
        "",
        f"- Outcome: **{decision['outcome']}**"
        + (f" (variant `{decision['variant']}`)" if decision.get("variant") else ""),
        f"- By: {decision.get('decided_by', '')}",
        f"- Rationale: {decision.get('rationale', '')}",
    ]
    override = decision.get("override")
    if override:
        lines += [
            "",
            f"**OVERRIDE: shipped despite blocking problems ({', '.join(override['problems'])}).**",
            "",
            f"- Override reason: {override['reason']}",
        ]
    return [*lines, ""]


def _governance_markdown(governance: Governance) -> list[str]:
    lines = ["## Health checks", "", "| Check | Status | Value | Message |", "|---|---|---:|---|"]
    for c in governance.checks:
        value = "n/a" if c.value is None else formatting.check_value(c.code, c.value)
        lines.append(f"| {c.code} | {c.status.upper() if c.status != 'ok' else 'ok'} | {value} | {c.message} |")
    lines += ["", "## Deviations from the pre-registration", ""]
    lines += [f"- **{d.code}**: {d.message}" for d in governance.deviations] or ["- none"]
    return [*lines, ""]


def readout_markdown(
    readout: Readout, *, narrative_text: str = "", governance: Governance | None = None, decision: dict | None = None
) -> str:
    governance = _governance(readout, governance)
    verdicts = verdicts_get(readout, governance=governance)
    trusted = not any(v.label == UNTRUSTWORTHY for v in verdicts)
    selected = readout.selected
    unit = "percentage points (pp)" if selected.kind == stats.BINARY else "the metric's own unit per user"
    lines = [
        f"# Readout: {readout.experiment_name} ({readout.experiment_slug})",
        "",
        f"- Metric: `{readout.metric}` ({selected.role}, {selected.kind}, {selected.direction} is good)",
        f"- Computed at: {readout.computed_at.isoformat()}",
        f"- Status: {readout.experiment_status}",
        f"- Alpha: {readout.alpha:g}. {VIEW_SENTENCE.get(readout.analysis, '')}",
        f"- Power plan: {readout.plan.sentence}",
        "",
        *_verdicts_markdown(verdicts),
        *_decision_markdown(decision),
        *_governance_markdown(governance),
        "## Warnings",
        "",
        *([f"- **{w['code']}**: {w['message']}" for w in readout.warnings] or ["- none"]),
        "",
        *_scorecard_markdown(readout, trusted=trusted),
        "",
        f"## Variants ({readout.metric})",
        "",
        *_variants_markdown(selected),
        "",
        f"## Comparisons (treatment minus control; differences in {unit}, relative lifts in %)",
        "",
        *[_comparison_markdown(c, selected.kind, trusted=trusted) for c in selected.comparisons],
    ]
    srm = readout.srm
    lines += [
        "",
        "## Sample ratio (SRM) check",
        "",
        f"- chi-square = {'n/a' if srm.chi2 is None else f'{srm.chi2:.3f}'}, "
        f"p {formatting.p_equals(srm.p_value)}" + (f" ({srm.reason})" if srm.reason else ""),
    ]
    if narrative_text:
        lines += ["", "## Narrative", "", narrative_text]
    lines += [
        "",
        "Statistics are defined in the Signal Dash metrics documentation (docs/metrics.md, sections 'Readout "
        "statistics' and 'Statistics engine'). Files: readout.json, variants.csv, query.sql, query_params.json.",
        "",
    ]
    return "\n".join(lines)


# --- the bundle and the decision record ------------------------------------------------------------
def _json_default(o):
    if isinstance(o, datetime | date):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def readout_bundle(
    readout: Readout, *, narrative_text: str = "", governance: Governance | None = None, decision: dict | None = None
) -> bytes:
    """A zip: summary.md, readout.json, variants.csv, query.sql and query_params.json."""
    governance = _governance(readout, governance)
    verdicts = verdicts_get(readout, governance=governance)
    sql = "\n\n".join(f"-- query {i + 1}\n{q.sql};" for i, q in enumerate(readout.queries))
    params = [{"query": i + 1, "params": q.params} for i, q in enumerate(readout.queries)]
    files = {
        "summary.md": readout_markdown(
            readout, narrative_text=narrative_text, governance=governance, decision=decision
        ),
        "readout.json": json.dumps(
            readout_as_json(readout, governance=governance, decision=decision), indent=2, default=_json_default
        ),
        "variants.csv": readout_csv(readout, verdicts=verdicts),
        "query.sql": sql + "\n",
        "query_params.json": json.dumps(params, indent=2, default=_json_default),
    }
    stamp = readout.computed_at.astimezone(UTC).timetuple()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def readout_decision_record(
    *,
    experiment: Experiment,
    readout: Readout | None = None,
    governance: Governance | None = None,
    decision: dict | None = None,
) -> tuple[dict, bytes]:
    """The primary-metric readout JSON (scorecard, checks, deviations, the decision and any override) and the
    readout bundle zip, for a decision."""
    readout = readout or readout_get(experiment=experiment)
    if governance is None:
        from readouts.governance import governance_get

        governance = governance_get(experiment=experiment, readout=readout)
    snapshot = readout_as_json(readout, governance=governance, decision=decision)
    bundle = readout_bundle(
        readout, narrative_text=narrative_fallback_text(readout), governance=governance, decision=decision
    )
    return snapshot, bundle
