"""The terminal says what the report says: sentences per model and a table within 80 columns."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.report.html import build_context
from tests.report.test_report import make_results


def test_evaluate_prints_the_reports_summary_within_80_columns(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    results = make_results(tmp_path)
    from medrobust.cli.evaluate import print_summary

    print_summary(results)
    text = capsys.readouterr().out
    sentences = build_context(results)["summaries"]
    assert len(sentences) == 2
    flat = re.sub(r"\s+", " ", text)
    for sentence in sentences:
        assert sentence in flat  # the same sentence as the report, word for word
    table = text[text.index("worst case at the largest budget"):]
    assert max(len(line) for line in table.splitlines()) <= 80
    for header in ("model", "budget", "clean", "worst", "AUC", "strongest"):
        assert header in table
    assert "nan" not in text and "…" not in text


def test_report_names_how_each_attack_ran(tmp_path: Path) -> None:
    from medrobust.evaluation.store import ResultStore

    results = make_results(tmp_path)
    with ResultStore(results / "results.sqlite") as store:
        store.con.execute("UPDATE runs SET method = 'pgd: 10 steps, loss ce, 1 restart, random start; keeps the "
                          "iterate that hurts the metric most', iterate_rule = 'metric' WHERE attack = 'pgd'")
        store.con.commit()
    ctx = build_context(results)
    assert ["unet", "pgd", "pgd: 10 steps, loss ce, 1 restart, random start; keeps the iterate that hurts the "
            "metric most", "-"] in ctx["methods"]["rows"]
    assert main(["report", str(results)]) == 0
    assert "Attacks as run" in (results / "report.html").read_text(encoding="utf-8")
