"""``reproduction.html``: one section per claim with published vs ours vs strongest, the verdict and its
interval, rendered in headless Chromium; the command refuses bad input with exit 2 and nothing written."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from medrobust.cli import main
from medrobust.reproduce.claims import ClaimResult
from medrobust.reproduce.page import PAGE_NAME, effect_figure, write_page
from medrobust.reproduce.verdict import Effect, verdict
from tests.report.test_screenshot import _run, chromium  # noqa: F401  (the session fixture)

EFFECTS = [Effect(0.10, 0.05, 0.15, 12, 3, 0.02, "Dice"), Effect(0.0, -0.01, 0.01, 12, 3, 0.02, "Dice"),
           Effect(0.05, -0.10, 0.20, 4, 1, 0.02, "Dice")]


def _results() -> list[ClaimResult]:
    out = []
    for i in range(7):
        effect = EFFECTS[i % 3]
        out.append(ClaimResult(
            claim=f"claim-{i + 1}", title=f"Claim {i + 1}", statement="A method does what its paper says.",
            source="seed 00x", published=f"published {i}", ours_published=f"ours {i}", published_protocol="PGD-10",
            ours_strongest=f"strongest {i}", strongest_protocol="worst case", effect=effect,
            effect_meaning="per-case difference", verdict=verdict(effect),
            figure=effect_figure(effect, ["a", "b"], [0.7, 0.6], "Dice"), notes=["scaled down"], seconds=60.0,
            results=["results.sqlite"]))
    return out


def test_page_holds_every_claim_with_its_verdict_and_interval(tmp_path: Path) -> None:
    results = _results()
    html = write_page(results, tmp_path, scale="demo", quick=False, seconds=600.0).read_text(encoding="utf-8")
    for r in results:
        section = html[html.index(f'<section id="{r.claim}">'):]
        section = section[:section.index("</section>")]
        for text in (r.published, r.ours_published, r.ours_strongest, r.verdict, r.effect.describe()):
            assert text in section, text
    assert html.count('src="data:image/png;base64,') == 7
    assert "holds when the 95% bootstrap interval" in html and "its mean reaches the" in html  # the rule is stated
    assert f"10.0 min on {os.cpu_count()} CPU cores, torch {torch.__version__}" in html  # the time, and where


@pytest.mark.slow
def test_page_renders_in_headless_chromium(chromium: str, tmp_path: Path) -> None:  # noqa: F811
    page = write_page(_results(), tmp_path, scale="demo", quick=False, seconds=600.0)
    dom = _run(chromium, ["--dump-dom", page.resolve().as_uri()], tmp_path / "profile").stdout
    assert len(re.findall(r'<section id="claim-\d">', dom)) == 7
    assert {"holds", "does not hold", "inconclusive"} <= set(re.findall(r'class="verdict [^"]+">([^<]+)<', dom))


@pytest.mark.parametrize(("args", "word"), [
    (["no-such-claim"], "CLAIM"), (["--scale", "huge"], "--scale"), (["--scale", "full"], "--data"),
    (["--data", "missing.json"], "--data"),
])
def test_bad_input_exits_2_and_writes_nothing(args: list[str], word: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["reproduce", *args, "--out", str(out)]) == 2
    assert word in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_quick_run_of_a_claim_writes_its_rows_result_and_page(tmp_path: Path) -> None:
    out = tmp_path / "repro"
    assert main(["reproduce", "pgd-overstates", "--quick", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "pgd-overstates" / "result.json").read_text(encoding="utf-8"))
    assert result["verdict"] == "smoke run" and result["results"]
    assert all(Path(p).is_file() for p in result["results"])
    assert "smoke run" in (out / PAGE_NAME).read_text(encoding="utf-8")
