"""A figure a page quotes from a committed record is the record's own.

tests/quotes/ holds the quotes, one module per group of pages: each names the page, the record beside it
(docs/records/, docs/gpu/, trained_model/), where in the record the figure is, and how the page writes it. Rerun
a measurement without updating its page, or edit a page's figure without a record behind it, and this fails.
Also checked: every record a page links exists, every record in docs/records/ is linked from a page (a record
nobody quotes is a figure nobody can find), and every record says what made it and when.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.quotes import RECORDS, at, export_gpu_app, read, readme, serving_evaluation, speed, training_labels
from training.paths import PROJECT_ROOT

QUOTES = readme.QUOTES + speed.QUOTES + export_gpu_app.QUOTES + serving_evaluation.QUOTES + training_labels.QUOTES


def plain(text: str) -> str:
    """A page's text without emphasis or the notes in brackets after a table's figure, for whole-row checks."""
    text = text.replace("**", "")
    return re.sub(r" \(`auto`[^)]*\)", "", text)


def expected(record: dict, quote) -> str:
    if callable(quote):
        return quote(record)
    path, template = quote
    return template.format(at(record, path))


@pytest.mark.parametrize(
    ("page", "record", "quote"), QUOTES, ids=[f"{page}:{i}" for i, (page, _, _) in enumerate(QUOTES)]
)
def test_each_quoted_figure_is_its_records(page, record, quote):
    text = (PROJECT_ROOT / page).read_text(encoding="utf-8")
    figure = expected(read(record), quote)
    assert figure in text or figure in plain(text), f"{page} does not quote {figure!r} from {record}"


def linked_records(page: Path) -> set[Path]:
    links = re.findall(r"\]\(([^)#\s]+\.json)\)", page.read_text(encoding="utf-8"))
    return {(page.parent / link).resolve() for link in links}


def pages() -> list[Path]:
    return [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def test_every_linked_record_exists_and_every_record_is_linked():
    linked = set().union(*(linked_records(page) for page in pages()))
    missing = sorted(str(path.relative_to(PROJECT_ROOT)) for path in linked if not path.is_file())
    assert not missing, f"pages link records that are not committed: {missing}"
    unlinked = sorted(path.name for path in RECORDS.glob("*.json") if path.resolve() not in linked)
    assert not unlinked, f"records no page links: {unlinked}"


def test_every_record_says_what_made_it_and_when():
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        # evaluate.py's report, an export's record, an adapter's metrics.json after evaluate.py --record
        run = record.get("run") or record.get("exported") or record.get("test", {}).get("run") or {}
        made_by = record.get("command") or run.get("command") or ("exported" in record and "inference/export.py")
        assert made_by, f"{path.name} has no command"
        assert record.get("date") or run.get("date"), f"{path.name} has no date"
