"""Render report.html in headless Chromium: a non-blank screenshot, every section, no broken image.

Chromium is found on PATH (``chromium`` or ``chromium-browser``). When it is missing, the
session fixture installs Debian's ``chromium`` with apt-get, but only as root and when
``CI`` or ``MEDROBUST_INSTALL_CHROMIUM`` is set; otherwise the tests skip and say why.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from medrobust.report import write_report
from tests.report.test_report import PNG_MAGIC, SECTIONS, make_results

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find()
    if found:
        return found
    allowed = os.environ.get("CI") or os.environ.get("MEDROBUST_INSTALL_CHROMIUM")
    if not allowed or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium not on PATH; install Debian `chromium`, or run as root with CI=1 or "
                    "MEDROBUST_INSTALL_CHROMIUM=1 to let the test set-up install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(cmd)}): {done.stderr[-500:]}")
    found = _find()
    if not found:
        pytest.skip("apt-get installed chromium but it is not on PATH")
    return found


def _run(chromium: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    report = write_report(make_results(tmp_path / "results"))
    url = report.resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = _run(chromium, [f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile")
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-800:]}"
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.var() > 1e-3, "screenshot is blank"

    dom = _run(chromium, ["--dump-dom", url], tmp_path / "profile").stdout
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}"', dom), f"section {section} missing from the rendered DOM"
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', dom)
    assert len(srcs) >= 2
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), f"image not embedded: {src[:60]}"
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
