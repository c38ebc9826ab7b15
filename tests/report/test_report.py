"""The HTML report: every section, embedded PNGs that decode, numbers from the store."""
from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from medrobust.evaluation.examples import EXAMPLES_DIR, example_name, save_example, select_examples
from medrobust.evaluation.robustness import masking_checks
from medrobust.evaluation.store import ResultStore
from medrobust.report import write_report

SECTIONS = ["summary", "curves", "auc", "worst-case", "per-class", "masking-checks", "examples", "method"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["background", "gm", "wm"]


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    label = np.where(r < 0.45, 2, np.where(r < 0.8, 1, 0)).astype(np.int64)
    image = (label / 2 + 0.05 * rng.standard_normal(label.shape)).clip(0, 1).astype(np.float32)
    return image[None], label


def make_results(folder: Path, examples: int = 2) -> Path:
    """A results folder as the grid writes it: a segmentation and a classification model."""
    store = ResultStore(folder / "results.sqlite", "abc123", json.dumps({"examples": examples, "seed": 0}))
    store.set_model("unet", "segmentation", CLASSES, {"offset": -175.0, "scale": 425.0, "clip": [0, 1], "raw_unit": "HU"})
    store.set_model("resnet", "classification", ["healthy", "tumour"], None)
    strength = {"fgsm": 0.04, "pgd": 0.09, "square": 0.06}
    for attack, eps, case in itertools.product(strength, [2.0, 4.0, 8.0], range(3)):
        clean = 0.82 + 0.02 * case
        adv = max(clean - strength[attack] * eps * (1 + 0.1 * case), 0.0)
        common = {"config_hash": "abc123", "perturbation": attack, "kind": "attack", "attack": attack, "norm": "linf",
                  "eps_stated": eps, "eps_unit": "1/255", "eps_model": eps / 255, "eps_raw": eps / 255 * 425,
                  "case_id": f"case{case}", "linf_model": eps / 255, "l2_model": eps / 30, "linf_raw": eps * 1.7,
                  "l2_raw": eps * 14, "ssim": 1 - eps / 80, "psnr": 48 - 2 * eps, "loss_initial": 0.3,
                  "loss_best": 0.3 + eps / 10, "attack_seconds": 0.5, "seconds": 0.6}
        store.add_run({**common, "model": "unet", "task": "segmentation", "score_name": "dice_mean",
                       "clean_score": clean, "adv_score": adv, "clean_per_class": {"gm": clean, "wm": clean - 0.1},
                       "adv_per_class": {"gm": adv, "wm": max(adv - 0.1, 0)}})
        fooled = float(eps >= 4 and attack != "fgsm" or case == 2)
        store.add_run({**common, "model": "resnet", "task": "classification", "score_name": "accuracy",
                       "clean_score": 1.0, "adv_score": 1.0 - fooled, "label": case % 2, "clean_pred": case % 2,
                       "adv_pred": (case + int(fooled)) % 2, "clean_prob": 0.9, "adv_prob": 0.9 - 0.5 * fooled})
    df = store.to_dataframe()
    store.write_checks(masking_checks(df))
    for _, r in select_examples(df, examples).iterrows():
        image, label = _volume(int(r["case_id"][-1]))
        seg = r["task"] == "segmentation"
        adv = (image + np.sign(np.random.default_rng(1).standard_normal(image.shape)) * r["eps_stated"] / 255)
        save_example(folder / EXAMPLES_DIR / r["example"],
                     image=image if seg else image[..., 8].repeat(3, 0), adversarial=adv if seg else adv[..., 8].repeat(3, 0),
                     label=label if seg else int(r["label"]), pred_clean=label if seg else int(r["clean_pred"]),
                     pred_adv=np.where(label == 2, 1, label) if seg else int(r["adv_pred"]),
                     info={"model": r["model"], "perturbation": r["perturbation"], "eps_stated": r["eps_stated"],
                           "eps_unit": "1/255", "case_id": r["case_id"], "task": r["task"],
                           "clean_score": r["clean_score"], "adv_score": r["adv_score"],
                           "classes": CLASSES if seg else ["healthy", "tumour"], "low": 0.0, "high": 1.0})
    store.close()
    return folder


def images(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', html)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    path = write_report(make_results(folder))
    assert path == folder / "report.html"
    return path


def test_report_has_every_section_and_decodable_images(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    srcs = images(html)
    assert len(srcs) == 2 + 4  # one curves figure per model + 2 examples per model
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "http://" not in html and "https://" not in html  # self-contained


def test_summary_states_clean_and_worst_numbers(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    # worst case at eps 8/255 is pgd: mean over cases of max(clean - 0.72 * (1 + 0.1 c), 0)
    clean = np.mean([0.82, 0.84, 0.86])
    worst = np.mean([max(0.82 + 0.02 * c - 0.72 * (1 + 0.1 * c), 0) for c in range(3)])
    assert (f"the mean foreground Dice of unet falls from {clean:.3f} (clean) to {worst:.3f} over 3 cases"
            in html)
    assert "Under the worst of 3 attacks (fgsm, pgd, square) at L∞ eps 8/255" in html
    assert "the accuracy of resnet falls from 100.0% (clean) to 0.0%" in html
    assert "eps (1/255)" in html and "PSNR (dB)" in html and "L∞ (raw units)" in html
    assert "13.6 HU" in html  # achieved norm of the CT model in its raw unit


def test_worst_case_table_beside_each_attack(report: Path) -> None:
    table = report.read_text(encoding="utf-8").split('<section id="worst-case">')[1].split("</section>")[0]
    rows = re.findall(r"<tr><td>\d/255</td>(.*?)</tr>", table)
    assert len(rows) == 2 * 4  # two models x (clean point + three eps)
    for row in rows:
        cells = [float(c.rstrip("%")) for c in re.findall(r"<td>([^<]*)</td>", row)]
        worst, attacks = cells[1], cells[2:]
        assert len(attacks) == 3 and all(worst <= a for a in attacks)


def test_examples_missing_files_are_skipped_and_empty_store_renders(tmp_path: Path) -> None:
    folder = make_results(tmp_path / "r", examples=1)
    for f in (folder / EXAMPLES_DIR).iterdir():
        f.unlink()
    html = write_report(folder).read_text(encoding="utf-8")
    assert "No example slices were saved." in html and len(images(html)) == 2
    empty = tmp_path / "empty"
    ResultStore(empty / "results.sqlite", "h").close()
    html = write_report(empty).read_text(encoding="utf-8")
    assert "holds no runs yet" in html and all(f'id="{s}"' in html for s in SECTIONS)
    with pytest.raises(ValueError, match="results.sqlite"):
        write_report(tmp_path / "nowhere")


def test_example_names_are_stable_and_distinct() -> None:
    a = example_name("unet", "pgd", 4.0, "case/1")
    assert a == example_name("unet", "pgd", 4.0, "case/1") and "/" not in a and a.endswith(".npz")
    assert a != example_name("unet", "pgd", 4.0, "case-1")
