"""A class-folder PNG set end to end through the CLI (train -> ensemble -> attack -> evaluate ->
report): classification metrics, confusion matrices, Grad-CAM and the ensemble table, rendered
in headless Chromium; bad class folders exit 2 with nothing written."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import yaml

from medrobust.cli import main
from medrobust.data.io import write_png
from medrobust.evaluation.ensembles import ensemble_table, load_ensemble_runs
from medrobust.evaluation.store import ResultStore
from medrobust.report.classification import SURVIVES, classification_context
from tests.report.test_report import PNG_MAGIC
from tests.report.test_screenshot import _run, chromium  # noqa: F401  (chromium is a fixture)

CLASSES = ["healthy", "lesion"]
MODELS = {"r18": ("resnet18", '{"widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": true}'),
          "d121": ("densenet121", '{"init_features": 8, "growth_rate": 4, "block_config": [2, 2]}')}



def write_class_folders(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Grey PNG class folders of mixed sizes (28-40 px); a lesion is a bright square."""
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for k, cls in enumerate(CLASSES):
            for j in range(n):
                side = int(rng.choice([28, 32, 40]))
                img = 60 + 15 * rng.standard_normal((side, side))
                if k:
                    r, c = rng.integers(2, side // 2, 2)
                    img[r:r + side // 3, c:c + side // 3] += 140
                write_png(root / split / cls / f"{split}_{j}.png", img.clip(0, 255))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    data = write_class_folders(root / "data", {"train": 4, "val": 2, "test": 2})
    for name, (arch, kwargs) in MODELS.items():
        assert main(["train", "--data", str(data), "--model", arch, "--out", str(root / name), "--epochs", "2",
                     "--batch-size", "4", "--lr", "0.01", "--patch-size", "32,32", "--model-kwargs", kwargs]) == 0
    assert main(["ensemble", "--checkpoints", str(root / "r18" / "model.json"), str(root / "d121" / "model.json"),
                 "--out", str(root / "ens")]) == 0
    assert main(["attack", "--checkpoint", str(root / "ens" / "model.json"), "--data", str(data), "--split", "test",
                 "--steps", "2", "--out", str(root / "adv")]) == 0
    grid = {"models": [{"name": n, "checkpoint": str(root / n / "model.json")} for n in ("r18", "d121", "ens")],
            "data": {"datalist": str(data), "split": "test"},
            "perturbations": [{"attack": "pgd", "eps": [8], "eps_unit": "1/255", "options": {"steps": 2}}],
            "out": str(root / "results"), "examples": 2}
    (root / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert main(["evaluate", str(root / "grid.yaml"), "--no-progress"]) == 0
    return {"root": root, "data": data, "results": root / "results", "report": root / "results" / "report.html"}


@pytest.mark.slow
def test_class_folders_run_end_to_end_through_the_cli(run: dict[str, Path]) -> None:
    meta = json.loads((run["root"] / "r18" / "model.json").read_text(encoding="utf-8"))
    assert meta["classes"] == CLASSES and meta["extra"]["image_size"] == [32, 32]  # mixed sizes, resized as stated
    manifest = json.loads((run["root"] / "adv" / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["cases"]) == 4
    html = run["report"].read_text(encoding="utf-8")
    for section in ("classification", "gradcam", "ensembles"):
        assert f'<section id="{section}"' in html
    for text in ("balanced accuracy", "AUROC", "true \\ predicted", "hard vote", "transfer from r18", "joint (mean logits)"):
        assert text in html


@pytest.mark.slow
def test_report_numbers_come_from_the_store(run: dict[str, Path]) -> None:
    with ResultStore(run["results"] / "results.sqlite") as store:
        df, models = store.to_dataframe(), store.models()
    ctx = classification_context(run["results"], df, models)
    assert ctx is not None
    clean_rows = {r[0]: r for r in ctx["metrics"]["rows"] if r[1] == "clean"}
    for model in ("r18", "d121", "ens"):
        expected = df[df["model"] == model].drop_duplicates("case_id")["clean_score"].mean()
        assert clean_rows[model][3] == f"{100 * expected:.1f}%" and clean_rows[model][2] == 4
    for cm in ctx["confusion"]:
        for t in cm["tables"]:
            assert sum(sum(r[1:]) for r in t["rows"]) == 4
    t = ensemble_table(load_ensemble_runs(run["results"] / "results.sqlite"))
    clean = t[t["setting"] == "clean"]["hard_vote"].iloc[0]
    joint = t[t["setting"].str.startswith("joint")]["hard_vote"].min()
    (sentence,) = ctx["ensemble_sentences"]
    survives = joint >= clean - SURVIVES
    assert sentence.startswith("Yes" if survives else "No") and ("does not survive" in sentence) != survives
    assert len(ctx["ensembles"][0]["rows"]) == 1 + 4  # clean, two transfers, two joint
    assert ctx["gradcam"] and all(base64.b64decode(g["png"]).startswith(PNG_MAGIC) for g in ctx["gradcam"])
    assert all(0 <= float(re.search(r"IoU.*: ([0-9.]+)", g["caption"]).group(1)) <= 1 for g in ctx["gradcam"])


def _bluish(shot: Path) -> float:
    """Fraction of pixels tinted by the Grad-CAM colours (the 'jet' map's cold end over grey)."""
    px = mpimg.imread(shot)[..., :3]
    return float(((px[..., 2] - px[..., 0] > 0.15) & (px[..., 2] - px[..., 1] > 0.1)).mean())


@pytest.mark.slow
def test_gradcam_section_renders_in_headless_chromium(run: dict[str, Path], chromium: str,  # noqa: F811
                                                     tmp_path: Path) -> None:
    url = run["report"].resolve().as_uri()
    dom = _run(chromium, ["--dump-dom", url], tmp_path / "profile").stdout
    section = dom[dom.index('<section id="gradcam"'):]
    section = section[: section.index("</section>")]
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', section)
    assert srcs and all(base64.b64decode(s.split(",", 1)[1]).startswith(PNG_MAGIC) for s in srcs)
    # Headless Chromium does not scroll to #gradcam before its screenshot, so the other sections
    # are hidden by CSS: the Grad-CAM section then fills the top of the page, rendered as is.
    html = run["report"].read_text(encoding="utf-8")
    shots = {}
    for keep in ("gradcam", "none"):
        page = tmp_path / f"{keep}.html"
        page.write_text(html.replace("</head>", f"<style>main > section:not(#{keep}) {{display: none}}</style></head>"))
        shots[keep] = tmp_path / f"{keep}.png"
        _run(chromium, [f"--screenshot={shots[keep]}", "--window-size=1280,900", page.as_uri()], tmp_path / "profile")
        assert shots[keep].is_file(), f"no screenshot of {page}"
    assert _bluish(shots["gradcam"]) > max(0.02, 10 * _bluish(shots["none"]))  # the nav links are blue too


@pytest.mark.slow
def test_nifti_classification_csv_runs_end_to_end(tmp_path: Path) -> None:
    from medrobust.data.io import write_nifti
    from medrobust.evaluation.explain import load_example_cams

    rng = np.random.default_rng(2)
    lines = ["image,label,split"]
    for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        vol = rng.normal(100, 10, (16, 16, 16)).astype(np.float32)
        vol[4:9, 4:9, 4:9] += 80 * (i % 2)
        write_nifti(tmp_path / f"v{i}.nii.gz", vol, np.diag([1.5, 1.5, 2.0, 1.0]))
        lines.append(f"v{i}.nii.gz,{CLASSES[i % 2]},{split}")
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    data, run3d = tmp_path / "cases.csv", tmp_path / "r18"
    assert main(["train", "--data", str(data), "--model", "resnet18", "--out", str(run3d), "--epochs", "1",
                 "--model-kwargs", MODELS["r18"][1]]) == 0
    assert main(["attack", "--checkpoint", str(run3d / "model.json"), "--data", str(data), "--split", "test",
                 "--steps", "1", "--out", str(tmp_path / "adv")]) == 0
    grid = {"models": [{"name": "r18-3d", "checkpoint": str(run3d / "model.json")}],
            "data": {"datalist": str(data), "split": "test"}, "examples": 1, "out": str(tmp_path / "results"),
            "perturbations": [{"attack": "fgsm", "eps": [8], "eps_unit": "1/255"}]}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert main(["evaluate", str(tmp_path / "grid.yaml"), "--no-progress"]) == 0
    html = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert '<section id="classification"' in html and "r18-3d · case" in html  # a Grad-CAM panel
    (cams,) = (tmp_path / "results" / "examples").glob("*.gradcam.npz")
    loaded = load_example_cams(cams)
    assert loaded["slice"] >= 0 and loaded["cam_clean"].shape == (16, 16)


@pytest.mark.slow
def test_bad_class_folders_exit_2_with_nothing_written(run: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def refused(argv: list[str], out: Path, *names: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err.replace("\n", "")
        assert all(n in err for n in names), err
        assert not out.exists()

    out = tmp_path / "run"
    empty = write_class_folders(tmp_path / "empty", {"train": 2, "val": 1})
    for f in (empty / "train" / "lesion").iterdir():
        f.unlink()
    refused(["train", "--data", str(empty), "--model", "resnet18", "--out", str(out)], out, "lesion", "no images")

    sizes = write_class_folders(tmp_path / "sizes", {"train": 3, "val": 1})  # 28, 32 and 40 px: no stated size
    refused(["train", "--data", str(sizes), "--model", "resnet18", "--out", str(out)], out, "--patch-size", "sizes")

    broken = write_class_folders(tmp_path / "broken", {"train": 2, "val": 1})
    png = broken / "train" / "healthy" / "train_0.png"
    png.write_bytes(png.read_bytes()[:40])
    refused(["train", "--data", str(broken), "--model", "resnet18", "--out", str(out)], out, str(png))

    mixed = write_class_folders(tmp_path / "mixed", {"train": 2, "val": 1})
    (mixed / "val" / "lesion").rename(mixed / "val" / "tumour")
    refused(["train", "--data", str(mixed), "--model", "resnet18", "--out", str(out)], out, "train", "val", "tumour")

    (mixed / "test").mkdir()
    (mixed / "val" / "tumour").rename(mixed / "test" / "tumour")
    (mixed / "val" / "healthy").rename(mixed / "test" / "healthy")
    refused(["attack", "--checkpoint", str(run["root"] / "r18" / "model.json"), "--data", str(mixed), "--split", "test",
             "--out", str(out)], out, str(run["root"] / "r18" / "model.json"), str(mixed), "tumour")
