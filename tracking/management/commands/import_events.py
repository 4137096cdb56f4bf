"""manage.py import_events FILE.csv|FILE.jsonl: backfill historical events with the API's rules.

Each row is validated by the API's own validators (`tracking.fast_validation.plain_event`, else
`tracking.api.event_validate`: the serializer behind POST /api/track and every batch item) and stored
by `tracking.services.events_ingest` in batches of BATCH rows, one transaction each: the same dedup,
first-exposure assignment, covariates, variant conflicts and counting as the API. On PostgreSQL a
batch's events travel by `COPY` into a staging table and one `INSERT … SELECT … ON CONFLICT DO NOTHING
RETURNING` stores them (`tracking.queries._copy_insert`); on SQLite, the API's multi-row `INSERT … ON
CONFLICT DO NOTHING RETURNING`. So a rerun of the same file stores nothing new (every row is then a
duplicate), and nothing is dropped silently: each rejected row is written with its line number, error
code and reason to the rejects file.

JSONL: one JSON object per line, the API's event fields. CSV: a header row with those field names;
empty cells are absent fields, `value` is a number, `props` and `covariates` are JSON objects.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from rest_framework import serializers
from tqdm import tqdm

from tracking.api import event_validate
from tracking.fast_validation import plain_event
from tracking.services import EventIn, Outcome, events_ingest

BATCH = 1000
JSON_COLUMNS = ("props", "covariates")


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # the validator says why


def _csv_item(row: dict[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name, text in row.items():
        if name is None or text is None or text == "":
            continue
        if name == "value":
            item[name] = _number(text)
        elif name in JSON_COLUMNS:
            item[name] = json.loads(text)
        else:
            item[name] = text
    return item


def read_items(path: Path) -> Iterator[tuple[int, Any, str]]:
    """(line number, decoded item or an Exception, raw text) per data row."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            for row in reader:
                raw = json.dumps(row)
                try:
                    yield reader.line_num, _csv_item(row), raw
                except ValueError as exc:
                    yield reader.line_num, exc, raw
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), line.rstrip("\n")
            except ValueError as exc:
                yield number, exc, line.rstrip("\n")


class Command(BaseCommand):
    help = "Import historical events from a CSV or JSONL file with the tracking API's rules (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--rejects", type=Path, help="where rejected rows go (default: FILE.rejected.jsonl)")
        parser.add_argument(
            "--allow-before-start", action="store_true", help="accept events dated before the experiment started"
        )

    def handle(self, *args, **options):
        path: Path = options["file"]
        if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson") or not path.is_file():
            raise CommandError(f"{path}: expected an existing .csv or .jsonl file")
        rejects_path: Path = options["rejects"] or path.with_name(path.name + ".rejected.jsonl")
        with path.open("rb") as handle:
            total = max(0, sum(1 for _ in handle) - (1 if path.suffix.lower() == ".csv" else 0))
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        with rejects_path.open("w", encoding="utf-8") as rejects:
            pending: list[tuple[int, EventIn, str]] = []
            now = timezone.now()
            for number, item, raw in tqdm(read_items(path), total=total, unit="row", file=self.stderr, disable=None):
                event = self._validate(item, now, number, raw, rejects, counts)
                if event is not None:
                    pending.append((number, event, raw))
                if len(pending) >= BATCH:
                    self._store(pending, options["allow_before_start"], rejects, counts)
                    pending = []
            self._store(pending, options["allow_before_start"], rejects, counts)
        self.stdout.write(
            f"{path.name}: {counts['accepted']} accepted, {counts['duplicate']} duplicate, "
            f"{counts['rejected']} rejected" + (f" (written to {rejects_path})" if counts["rejected"] else "")
        )

    @staticmethod
    def _reject(rejects, counts, number: int, error: str, detail: Any, raw: str) -> None:
        counts["rejected"] += 1
        rejects.write(json.dumps({"line": number, "error": error, "detail": detail, "row": raw}) + "\n")

    def _validate(self, item, now, number, raw, rejects, counts) -> EventIn | None:
        if isinstance(item, Exception):
            self._reject(rejects, counts, number, "unreadable", str(item), raw)
            return None
        try:  # the plainly valid row (the common case) skips the serializer, as on the API
            return plain_event(item, now) or event_validate(item, now)
        except serializers.ValidationError as exc:
            self._reject(rejects, counts, number, "invalid", exc.detail, raw)
            return None

    def _store(self, pending, allow_before_start: bool, rejects, counts) -> None:
        if not pending:
            return
        results = events_ingest(events=[e for _, e, _ in pending], allow_before_start=allow_before_start, bulk=True)
        for (number, _, raw), result in zip(pending, results, strict=True):
            if result.outcome == Outcome.CREATED:
                counts["accepted"] += 1
            elif result.outcome == Outcome.DUPLICATE:
                counts["duplicate"] += 1
            else:
                self._reject(rejects, counts, number, result.outcome.value, result.detail, raw)
