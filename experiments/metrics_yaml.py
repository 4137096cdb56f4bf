"""Metrics as code: the catalog as YAML (``metrics_export``) and back (``metrics_import``).

The file is ``{"metrics": [metric object, ...]}`` with the ``/api/metrics`` field names (ratio parts by
key, the owner by username). Import validates every metric before writing any (unknown fields and kinds,
ratio parts, cap values, funnel steps — each problem reported with the metric key and field), then writes
through ``catalog.metric_save`` (audited, source "import"), so a second run of the same file changes
nothing. Official metrics need ``certify=True`` and an actor with ``experiments.certify_metric``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from experiments import catalog
from experiments.models import PERM_CERTIFY_METRIC, Metric

FIELDS = set(catalog.METRIC_FIELDS)


def metrics_export_yaml() -> str:
    metrics = Metric.objects.select_related("owner", "numerator", "denominator").order_by("key")
    return yaml.safe_dump({"metrics": [catalog.metric_as_dict(m) for m in metrics]}, sort_keys=False)


class ImportRefused(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _parse(text: str) -> list[dict]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ImportRefused([f"file: not valid YAML ({exc})"]) from exc
    items = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ImportRefused(["file: expected a mapping with a `metrics` list of metric objects"])
    return items


def _build(item: dict, existing: dict[str, Metric], users: dict[str, Any], problems: list[str]) -> Metric | None:
    key = str(item.get("key") or "")
    where = f"metric '{key or '?'}'"
    for name in sorted(set(item) - FIELDS):
        problems.append(f"{where} field '{name}': unknown field")
    metric = existing.get(key) or Metric(key=key)
    for name in FIELDS - {"owner", "numerator", "denominator", "key"}:
        if name in item:
            setattr(metric, name, item[name] if item[name] is not None or name in ("window_hours", "cap_value")
                    else Metric._meta.get_field(name).get_default())  # fmt: skip
    owner = item.get("owner")
    if owner:
        if owner not in users:
            problems.append(f"{where} field 'owner': no user '{owner}'")
        else:
            metric.owner = users[owner]
    try:
        metric.full_clean(exclude=["numerator", "denominator", "owner"], validate_unique=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            if name in ("numerator", "denominator"):
                continue  # ratio parts are checked against the file and the catalog (_check_parts)
            problems.extend(f"{where} field '{name}': {m}" for m in messages)
    return metric


def _check_parts(item: dict, kinds: dict[str, str], problems: list[str]) -> None:
    key, kind = item.get("key"), item.get("kind")
    for part in ("numerator", "denominator"):
        ref = item.get(part)
        where = f"metric '{key}' field '{part}'"
        if kind != "ratio":
            if ref:
                problems.append(f"{where}: only ratio metrics have a {part}")
        elif not ref:
            problems.append(f"{where}: a ratio metric needs a {part}")
        elif ref not in kinds:
            problems.append(f"{where}: no metric '{ref}' in the file or the catalog")
        elif kinds[ref] not in ("binary", "mean"):
            problems.append(f"{where}: '{ref}' must be a binary or mean metric (it is {kinds[ref]})")


def _duplicates(keys: list[str]) -> list[str]:
    return [f"metric '{k}' field 'key': appears more than once" for k in sorted({k for k in keys if keys.count(k) > 1})]


def _certify_problems(items, existing, actor, certify: bool) -> list[str]:
    official = [i.get("key") for i in items if i.get("official") or getattr(existing.get(i.get("key")), "official", 0)]
    if not official or (certify and actor is not None and actor.has_perm(PERM_CERTIFY_METRIC)):
        return []
    return [
        f"metric '{k}' field 'official': official metrics need --certify by a user with the certify_metric "
        "permission (--as USERNAME)"
        for k in official
    ]


def metrics_import_yaml(text: str, *, actor=None, certify: bool = False) -> ImportResult:
    """Validate the whole file, then create or update every metric in it (nothing is written on a problem)."""
    items = _parse(text)
    existing = {m.key: m for m in Metric.objects.select_related("owner", "numerator", "denominator")}
    befores = {k: catalog.metric_as_dict(m) for k, m in existing.items()}
    names = [i["owner"] for i in items if isinstance(i.get("owner"), str)]
    users = {u.get_username(): u for u in get_user_model().objects.filter(username__in=names)}
    keys = [str(i.get("key") or "") for i in items]
    problems = _duplicates(keys)
    built = {k: _build(i, existing, users, problems) for k, i in zip(keys, items, strict=True)}
    kinds = {k: m.kind for k, m in existing.items()}
    kinds.update({k: str(i.get("kind")) for k, i in zip(keys, items, strict=True)})
    for item in items:
        _check_parts(item, kinds, problems)
    problems += _certify_problems(items, existing, actor, certify)
    if problems:
        raise ImportRefused(problems)
    return _write(items, built, befores, actor)


@transaction.atomic
def _write(items: list[dict], built: dict[str, Metric], befores: dict[str, dict], actor) -> ImportResult:
    result = ImportResult()
    ordered = sorted(items, key=lambda i: i.get("kind") == "ratio")  # parts before the ratios using them
    for item in ordered:
        metric = built[item["key"]]
        before = befores.get(item["key"])
        if item.get("kind") == "ratio":
            metric.numerator = Metric.objects.get(key=item["numerator"])
            metric.denominator = Metric.objects.get(key=item["denominator"])
        else:
            metric.numerator = metric.denominator = None
        catalog.metric_save(metric=metric, actor=actor, source="import")
        after = catalog.metric_as_dict(metric)
        bucket = result.created if before is None else (result.unchanged if before == after else result.updated)
        bucket.append(item["key"])
    return result
