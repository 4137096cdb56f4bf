"""Readout reads: the aggregate turned into statistics, warnings, JSON, CSV and the readout bundle."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.apps import apps
from django.utils import timezone

from experiments.models import Experiment, Variant
from readouts import queries, stats

METRIC_KEY_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


@dataclass(frozen=True)
class VariantReadout:
    id: int
    key: str
    name: str
    is_control: bool
    weight: int
    exposures: int
    conversions: int
    rate: stats.RateResult


@dataclass(frozen=True)
class Readout:
    experiment_id: int
    experiment_slug: str
    experiment_name: str
    experiment_status: str
    metric: str
    metrics: list[str]
    computed_at: datetime
    variants: list[VariantReadout]
    comparisons: list[stats.Comparison]
    srm: stats.SRMResult
    warnings: list[dict]
    conversions_late: int
    conversions_unexposed: int
    variant_conflicts: int | None
    queries: list[queries.BoundQuery] = field(default_factory=list)
    rows: list[queries.AggregateRow] = field(default_factory=list, repr=False)  # per day, for the charts

    @property
    def control(self) -> VariantReadout | None:
        return next((v for v in self.variants if v.is_control), None)


def metric_key_is_valid(metric: str) -> bool:
    return bool(METRIC_KEY_RE.match(metric))


def _variant_conflict_count(*, experiment_id: int) -> tuple[int | None, queries.BoundQuery | None]:
    """Rejected variant conflicts, if tracking records them (``tracking.VariantConflict``)."""
    try:
        model = apps.get_model("tracking", "VariantConflict")
    except LookupError:
        return None, None
    query = queries.readout_variant_conflict_query(model=model, experiment_id=experiment_id)
    return queries.readout_count(query), query


def _warnings(r: dict) -> list[dict]:
    out: list[dict] = []
    srm: stats.SRMResult = r["srm"]
    if srm.mismatch:
        out.append(
            {
                "code": "srm",
                "message": (
                    "Sample ratio mismatch: the exposures per variant do not match the configured traffic "
                    f"weights (chi-square p = {format_p(srm.p_value)}, below {stats.SRM_P_THRESHOLD}). "
                    "Assignment or logging is probably broken; do not trust the comparison until it is explained."
                ),
                "chi2": srm.chi2,
                "p_value": srm.p_value,
            }
        )
    missing = [v.key for v in r["variants"] if v.exposures == 0]
    if missing:
        out.append(
            {
                "code": "missing_exposures",
                "message": f"No exposed users in: {', '.join(missing)}. Those arms cannot be compared.",
                "variants": missing,
            }
        )
    small = stats.small_samples([stats.Arm(v.key, v.exposures, v.conversions) for v in r["variants"]])
    if small:
        out.append(
            {
                "code": "small_sample",
                "message": (
                    f"Small sample in: {', '.join(s.arm for s in small)}. Each arm needs at least "
                    f"{stats.SMALL_SAMPLE_MIN_EXPOSURES} exposed users, {stats.SMALL_SAMPLE_MIN_CONVERSIONS} "
                    f"conversions and {stats.SMALL_SAMPLE_MIN_NON_CONVERSIONS} non-conversions for the intervals "
                    "and the z-test to be reliable; treat these numbers as early and noisy."
                ),
                "variants": [s.arm for s in small],
                "thresholds": {
                    "min_exposures": stats.SMALL_SAMPLE_MIN_EXPOSURES,
                    "min_conversions": stats.SMALL_SAMPLE_MIN_CONVERSIONS,
                    "min_non_conversions": stats.SMALL_SAMPLE_MIN_NON_CONVERSIONS,
                },
            }
        )
    orphan = r["late"] + r["unexposed"]
    if orphan:
        out.append(
            {
                "code": "conversion_without_exposure",
                "message": (
                    f"{orphan} {r['metric']} conversion(s) were not counted because the user had no exposure "
                    f"at or before the conversion ({r['unexposed']} never exposed, {r['late']} converted before "
                    "being exposed)."
                ),
                "count": orphan,
                "never_exposed": r["unexposed"],
                "before_exposure": r["late"],
            }
        )
    if r["conflicts"]:
        out.append(
            {
                "code": "variant_conflict",
                "message": (
                    f"{r['conflicts']} event(s) were rejected because they named a different variant than the "
                    "user's assignment."
                ),
                "count": r["conflicts"],
            }
        )
    if r["variants"] and not any(v.is_control for v in r["variants"]):
        out.append({"code": "no_control", "message": "No variant is marked as control, so nothing is compared."})
    return out


def readout_get(*, experiment: Experiment, metric: str | None = None, by_day: bool = False) -> Readout:
    """The readout of one metric (the primary one by default). Query count is constant.

    ``by_day`` runs the per-day variant of the aggregate (same totals) so ``readout_daily_series``
    can draw the cumulative chart without another pass over the events.
    """
    metric = metric or experiment.primary_metric
    variants = list(Variant.objects.filter(experiment=experiment).order_by("-is_control", "key"))
    agg_query = queries.readout_aggregate_query(experiment_id=experiment.pk, by_day=by_day)
    rows = queries.readout_aggregate(agg_query)
    conflicts, conflict_query = _variant_conflict_count(experiment_id=experiment.pk)

    exposures: dict[int | None, int] = {}
    conversions: dict[int | None, int] = {}
    for r in rows:  # the aggregate is per day: sum the days
        if r.kind == "exposure":
            exposures[r.variant_id] = exposures.get(r.variant_id, 0) + r.users
        elif r.metric == metric:
            conversions[r.variant_id] = conversions.get(r.variant_id, 0) + r.users
    late = sum(r.late for r in rows if r.kind == "conversion" and r.metric == metric)
    unexposed = sum(r.unexposed for r in rows if r.kind == "conversion" and r.metric == metric)
    seen_metrics = {r.metric for r in rows if r.kind == "conversion"}
    metrics = [experiment.primary_metric, *sorted(seen_metrics - {experiment.primary_metric})]

    vr = []
    for v in variants:
        n, c = exposures.get(v.pk, 0), conversions.get(v.pk, 0)
        vr.append(
            VariantReadout(
                v.pk, v.key, v.name, v.is_control, v.weight, n, c, stats.rate_with_ci(conversions=c, exposures=n)
            )
        )
    control = next((v for v in vr if v.is_control), None)
    comparisons = []
    if control is not None:
        c_arm = stats.Arm(control.key, control.exposures, control.conversions)
        comparisons = [
            stats.compare(control=c_arm, treatment=stats.Arm(v.key, v.exposures, v.conversions))
            for v in vr
            if not v.is_control
        ]
    srm = stats.srm_test(exposures=[v.exposures for v in vr], weights=[v.weight for v in vr])
    warnings = _warnings(
        {"srm": srm, "variants": vr, "metric": metric, "late": late, "unexposed": unexposed, "conflicts": conflicts}
    )
    return Readout(
        experiment_id=experiment.pk,
        experiment_slug=experiment.slug,
        experiment_name=experiment.name,
        experiment_status=experiment.status,
        metric=metric,
        metrics=metrics,
        computed_at=timezone.now(),
        variants=vr,
        comparisons=comparisons,
        srm=srm,
        warnings=warnings,
        conversions_late=late,
        conversions_unexposed=unexposed,
        variant_conflicts=conflicts,
        queries=[q for q in (agg_query, conflict_query) if q is not None],
        rows=rows,
    )


# --- Presentation helpers (shared by the API, the page, the narrative and the bundle) -----------


def format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p == 0:
        return "0 (below floating-point precision)"
    if p < 0.0001:
        return f"{p:.2e}"
    return f"{p:.4f}"


def _interval(i: stats.Interval | None) -> list[float] | None:
    return i.as_list() if i is not None else None


def readout_as_json(readout: Readout) -> dict:
    """The API body (and the decision snapshot)."""
    return {
        "experiment": {
            "slug": readout.experiment_slug,
            "name": readout.experiment_name,
            "status": readout.experiment_status,
        },
        "metric": readout.metric,
        "metrics": readout.metrics,
        "computed_at": readout.computed_at.isoformat(),
        "variants": [
            {
                "key": v.key,
                "name": v.name,
                "is_control": v.is_control,
                "weight": v.weight,
                "exposures": v.exposures,
                "conversions": v.conversions,
                "rate": v.rate.rate,
                "rate_ci": _interval(v.rate.ci),
                **({"note": v.rate.reason} if v.rate.reason else {}),
            }
            for v in readout.variants
        ],
        "comparisons": [
            {
                "variant": c.variant,
                "control": c.control,
                "diff": c.diff,
                "diff_ci": _interval(c.diff_ci),
                "lift": c.lift,
                "z": c.z,
                "p_value": c.p_value,
                **({"lift_note": c.lift_reason} if c.lift_reason else {}),
                **({"note": c.test_reason} if c.test_reason else {}),
            }
            for c in readout.comparisons
        ],
        "warnings": readout.warnings,
        "srm": {
            "chi2": readout.srm.chi2,
            "p_value": readout.srm.p_value,
            **({"note": readout.srm.reason} if readout.srm.reason else {}),
        },
        "data_quality": {
            "conversions_without_exposure": readout.conversions_late + readout.conversions_unexposed,
            "variant_conflicts": readout.variant_conflicts,
        },
    }


CSV_COLUMNS = [
    "variant",
    "name",
    "is_control",
    "weight",
    "exposures",
    "conversions",
    "rate",
    "rate_ci_low",
    "rate_ci_high",
    "diff_vs_control",
    "diff_ci_low",
    "diff_ci_high",
    "lift_percent",
    "z",
    "p_value",
]


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in untrusted text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _blank(x) -> str:
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def readout_csv(readout: Readout) -> str:
    by_variant = {c.variant: c for c in readout.comparisons}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in readout.variants:
        c = by_variant.get(v.key)
        rate_ci = v.rate.ci
        diff_ci = c.diff_ci if c else None
        writer.writerow(
            [
                _csv_safe(v.key),
                _csv_safe(v.name),
                "true" if v.is_control else "false",
                v.weight,
                v.exposures,
                v.conversions,
                _blank(v.rate.rate),
                _blank(rate_ci.low if rate_ci else None),
                _blank(rate_ci.high if rate_ci else None),
                _blank(c.diff if c else None),
                _blank(diff_ci.low if diff_ci else None),
                _blank(diff_ci.high if diff_ci else None),
                _blank(c.lift if c else None),
                _blank(c.z if c else None),
                _blank(c.p_value if c else None),
            ]
        )
    return buf.getvalue()


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def readout_markdown(readout: Readout, *, narrative_text: str = "") -> str:
    lines = [
        f"# Readout: {readout.experiment_name} ({readout.experiment_slug})",
        "",
        f"- Metric: `{readout.metric}`",
        f"- Computed at: {readout.computed_at.isoformat()}",
        f"- Status: {readout.experiment_status}",
        "",
        "## Warnings",
        "",
        *([f"- **{w['code']}**: {w['message']}" for w in readout.warnings] or ["- none"]),
        "",
        "## Variants",
        "",
        "| Variant | Control | Exposed users | Converted users | Rate | 95% CI (Wilson) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for v in readout.variants:
        ci = v.rate.ci
        ci_text = f"{_pct(ci.low)} – {_pct(ci.high)}" if ci else "n/a"
        lines.append(
            f"| {v.key} ({v.name}) | {'yes' if v.is_control else ''} | {v.exposures} | {v.conversions} "
            f"| {_pct(v.rate.rate)} | {ci_text} |"
        )
    lines += ["", "## Comparisons (treatment minus control)", ""]
    for c in readout.comparisons:
        ci = f"{_pct(c.diff_ci.low)} to {_pct(c.diff_ci.high)}" if c.diff_ci else "n/a"
        lift = f"{c.lift:.2f}%" if c.lift is not None else (c.lift_reason or "n/a")
        lines.append(
            f"- {c.variant} vs {c.control}: difference {_pct(c.diff)} (95% CI {ci}), lift {lift}, "
            f"z = {'n/a' if c.z is None else f'{c.z:.3f}'}, p = {format_p(c.p_value)}"
            + (f" — {c.test_reason}" if c.test_reason else "")
        )
    srm = readout.srm
    lines += [
        "",
        "## Sample ratio (SRM) check",
        "",
        f"- chi-square = {'n/a' if srm.chi2 is None else f'{srm.chi2:.3f}'}, p = {format_p(srm.p_value)}"
        + (f" ({srm.reason})" if srm.reason else ""),
    ]
    if narrative_text:
        lines += ["", "## Narrative", "", narrative_text]
    lines += [
        "",
        "Statistics are defined in docs/metrics.md (Readout statistics). Files: readout.json, variants.csv, "
        "query.sql, query_params.json.",
        "",
    ]
    return "\n".join(lines)


def _json_default(o):
    if isinstance(o, datetime | date):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def readout_bundle(readout: Readout, *, narrative_text: str = "") -> bytes:
    """A zip: summary.md, readout.json, variants.csv, query.sql and query_params.json."""
    sql = "\n\n".join(f"-- query {i + 1}\n{q.sql};" for i, q in enumerate(readout.queries))
    params = [{"query": i + 1, "params": q.params} for i, q in enumerate(readout.queries)]
    files = {
        "summary.md": readout_markdown(readout, narrative_text=narrative_text),
        "readout.json": json.dumps(readout_as_json(readout), indent=2, default=_json_default),
        "variants.csv": readout_csv(readout),
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


def readout_decision_record(*, experiment: Experiment) -> tuple[dict, bytes]:
    """The primary-metric readout JSON and the readout bundle zip, for a recorded decision."""
    readout = readout_get(experiment=experiment)
    from readouts.narrative import narrative_fallback_text  # local: narrative imports this module

    return readout_as_json(readout), readout_bundle(readout, narrative_text=narrative_fallback_text(readout))


def readout_daily_series(*, readout: Readout) -> dict:
    """Cumulative exposed and converted users (on the readout's metric) per variant and UTC day.

    Built from the per-day rows of ``readout_get(..., by_day=True)``: no further query.
    """
    if any(r.day is None for r in readout.rows):
        raise ValueError("readout_daily_series needs readout_get(..., by_day=True)")
    rows = [r for r in readout.rows if r.kind == "exposure" or r.metric == readout.metric]
    days = sorted({r.day for r in rows if r.users})
    series: dict[str, dict[str, list[int]]] = {"exposure": {}, "conversion": {}}
    for kind, per_variant in series.items():
        for v in readout.variants:
            counts: dict[date, int] = {}
            for r in rows:
                if r.kind == kind and r.variant_id == v.id:
                    counts[r.day] = counts.get(r.day, 0) + r.users
            total, points = 0, []
            for d in days:
                total += counts.get(d, 0)
                points.append(total)
            per_variant[v.key] = points
    return {"days": days, "exposures": series["exposure"], "conversions": series["conversion"]}
