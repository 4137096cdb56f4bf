"""The statistics documentation (docs/metrics.md) rendered for the app, cached per process."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import markdown
from django.conf import settings
from django.utils.safestring import SafeString, mark_safe


@cache
def metrics_doc_html() -> SafeString:
    """docs/metrics.md as HTML. The file is ours (in the repository), not user input."""
    text = (Path(settings.BASE_DIR) / "docs" / "metrics.md").read_text(encoding="utf-8")
    return mark_safe(markdown.markdown(text, extensions=["tables", "toc", "fenced_code"]))  # noqa: S308
