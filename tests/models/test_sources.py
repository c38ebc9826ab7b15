"""Model sources against the reference implementations: a MONAI bundle's own inference, a factory."""
from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.networks.nets import UNet
from safetensors.torch import save_file

from medrobust.cli import main
from medrobust.data.datalists import load_decathlon, save_decathlon
from medrobust.evaluation.loading import load_model
from medrobust.models.sources import SourceError, from_module, load_source
from medrobust.units import IntensityMap

NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2], "num_res_units": 0}
WINDOW = {"a_min": -175, "a_max": 250, "b_min": 0, "b_max": 1, "clip": True}
EPS_HU = 20.0
TOL = 1e-5  # max abs difference of logits accepted against the reference inference (float32)


def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(1)
    return UNet(**NET).eval()


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 16^3 CT-like cases in HU (air, soft tissue, an organ at 60 HU) with organ labels."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"))
    cases = []
    for i, centre in enumerate((7.0, 9.0)):
        organ = ((grid - centre) ** 2).sum(0) < 16
        image = np.where(((grid - 7.5) ** 2).sum(0) < 49, 20.0, -900.0) + rng.normal(0, 40, (16,) * 3)
        image[organ] = 60 + rng.normal(0, 30, organ.sum())
        cases.append({"id": f"ct_{i}", "image": image.astype(np.float32), "label": organ.astype(np.uint8)})
    root = tmp_path_factory.mktemp("ct")
    save_decathlon(root, {"training": cases[:1], "test": cases}, ["background", "spleen"], np.diag([1.5, 1.5, 2, 1]),
                   name="ct", description="CT-like phantoms in HU", modality="CT")
    return root / "dataset.json"


def write_bundle(folder: Path, *, network_def: bool = True, intensity: dict[str, Any] | None = None,
                 state: dict[str, torch.Tensor] | None = None) -> Path:
    """A MONAI bundle folder as the Model Zoo lays it out (configs/, models/model.pt)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    transform = intensity or {"_target_": "ScaleIntensityRanged", "keys": "image", **WINDOW}
    config: dict[str, Any] = {
        "bundle_root": ".", "image_key": "image",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"}, transform,
            {"_target_": "EnsureTyped", "keys": "@image_key"}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 1},
    }
    if network_def:
        config["network_def"] = {"_target_": "UNet", **NET}
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    meta = {"network_data_format": {
        "inputs": {"image": {"type": "image", "modality": "CT", "num_channels": 1, "spatial_shape": [16, 16, 16]}},
        "outputs": {"pred": {"type": "image", "num_channels": 2, "channel_def": {"0": "background", "1": "spleen"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save(tiny_unet().state_dict() if state is None else state, folder / "models" / "model.pt")
    return folder


def bundle_inference(folder: Path, image: str) -> torch.Tensor:
    """The bundle's own inference on one image: MONAI's parser, its preprocessing, its network."""
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser["bundle_root"] = str(folder)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(folder / "models" / "model.pt", weights_only=True))
    x = parser.get_parsed_content("preprocessing")({"image": image})["image"]
    with torch.no_grad():
        return net.eval()(torch.as_tensor(x)[None].float())


def split_cases(datalist: Path) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in load_decathlon(datalist, "test")}


def dice(pred: torch.Tensor, label: np.ndarray) -> float:
    p, t = pred.numpy() == 1, label == 1
    return float(2 * (p & t).sum() / (p.sum() + t.sum())) if p.sum() + t.sum() else 1.0


def run_grid_cli(folder: Path, model: dict[str, Any], datalist: Path) -> tuple[int, Path]:
    grid = {"models": [{"name": "byom", **model}], "data": {"datalist": str(datalist), "split": "test"},
            "perturbations": [{"attack": "pgd", "eps": [EPS_HU], "eps_unit": "HU", "options": {"steps": 3}}],
            "out": "results", "save_adversarial": True, "examples": 0}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid))
    return main(["evaluate", str(folder / "grid.yaml"), "--no-report", "--no-progress"]), folder / "results"


def check_grid_against(out: Path, datalist: Path, reference: dict[str, torch.Tensor]) -> None:
    """Clean Dice = the reference's Dice; adversarial images stay within EPS_HU of the raw image."""
    with sqlite3.connect(out / "results.sqlite") as con:
        rows = con.execute("SELECT case_id, clean_score, eps_raw, linf_model, eps_model FROM runs").fetchall()
    assert len(rows) == 2
    items = split_cases(datalist)
    for case_id, clean, eps_raw, linf, eps_model in rows:
        label = nib.load(items[case_id]["label"]).get_fdata()
        assert clean == pytest.approx(dice(reference[case_id].argmax(1)[0], label), abs=1e-6)
        assert eps_raw == pytest.approx(EPS_HU) and linf <= eps_model + 1e-6
        raw = nib.load(items[case_id]["image"]).get_fdata()
        adv = [p for p in out.rglob("*.nii.gz") if case_id in p.name]
        assert len(adv) == 1
        delta = np.abs(nib.load(adv[0]).get_fdata() - raw)
        assert delta.max() <= EPS_HU * (1 + 1e-5) and delta.max() > EPS_HU / 2  # inside the budget, and attacked


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "spleen_ct")


def test_bundle_source_reads_network_classes_window_and_roi(bundle: Path) -> None:
    model = load_source("bundle", bundle)
    assert model.classes == ["background", "spleen"] and model.info.roi_size == (16, 16, 16)
    assert model.intensity == IntensityMap.ct_window(-175, 250) and model.info.spatial_dims == 3
    ref = tiny_unet()
    assert all(torch.equal(a, b) for a, b in zip(model.network.state_dict().values(), ref.state_dict().values()))


def test_bundle_logits_equal_the_bundles_own_inference(bundle: Path, ct_data: Path) -> None:
    lm = load_model(load_source("bundle", bundle), ct_data, "test")
    items = split_cases(ct_data)
    for case in lm.split.dataset:
        with torch.no_grad():
            ours = lm.model(case["image"][None])
        ref = bundle_inference(bundle, items[case["id"]]["image"])
        assert float((ours - ref).abs().max()) < TOL


def test_evaluate_bundle_grid_with_pgd_in_hu(bundle: Path, ct_data: Path, tmp_path: Path) -> None:
    code, out = run_grid_cli(tmp_path, {"bundle": str(bundle)}, ct_data)
    assert code == 0
    items = split_cases(ct_data)
    reference = {k: bundle_inference(bundle, v["image"]) for k, v in items.items()}
    check_grid_against(out, ct_data, reference)


FACTORY = textwrap.dedent("""
    from monai.networks.nets import UNet

    def make(channels):
        return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=channels, strides=[2], num_res_units=0)

    def not_a_network():
        return "unet"
""")


@pytest.fixture()
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "byom_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_unet().state_dict().items()}, str(weights))
    return weights


def window_inference(image: str) -> torch.Tensor:
    """Reference for the factory: MONAI's ScaleIntensityRange on the raw image, then the network."""
    from monai.transforms import ScaleIntensityRange

    x = ScaleIntensityRange(**WINDOW)(torch.from_numpy(nib.load(image).get_fdata().astype(np.float32)))
    with torch.no_grad():
        return tiny_unet()(torch.as_tensor(x)[None, None].float())


def test_evaluate_python_factory_grid_with_pgd_in_hu(factory: Path, ct_data: Path, tmp_path: Path) -> None:
    model = {"python": "byom_nets:make", "weights": str(factory), "kwargs": {"channels": [4, 8]},
             "classes": ["background", "spleen"], "normalization": "ct:-175,250"}
    code, out = run_grid_cli(tmp_path / "grid", model, ct_data)
    assert code == 0
    items = split_cases(ct_data)
    reference = {k: window_inference(v["image"]) for k, v in items.items()}
    check_grid_against(out, ct_data, reference)


def test_in_memory_module_takes_its_intensity_map(ct_data: Path) -> None:
    net = tiny_unet()
    lm = load_model(from_module(net, ["background", "spleen"], intensity=IntensityMap.ct_window(-175, 250)),
                    ct_data, "test")
    case = lm.split.dataset[0]
    image = split_cases(ct_data)[case["id"]]["image"]
    with torch.no_grad():
        assert float((lm.model(case["image"][None]) - window_inference(image)).abs().max()) < TOL
    assert case["meta"]["intensity"]["raw_unit"] == "HU"


def test_torchscript_needs_consent(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(tiny_unet()), tmp_path / "net.pt")
    with pytest.raises(SourceError, match="runs the code"):
        load_source("torchscript", tmp_path / "net.pt", classes=["background", "spleen"])
    model = load_source("torchscript", tmp_path / "net.pt", classes=["background", "spleen"], trust_code=True)
    x = torch.rand(1, 1, 16, 16, 16)
    assert torch.allclose(model.network(x), tiny_unet()(x), atol=TOL)


def _bad_bundle(folder: Path, case: str) -> Path:
    if case == "no network_def":
        return write_bundle(folder, network_def=False)
    if case == "keys":
        state = tiny_unet().state_dict()
        state["extra.weight"] = state.pop(next(iter(state)))
        return write_bundle(folder, state=state)
    return write_bundle(folder, intensity={"_target_": "ScaleIntensityRangePercentilesd", "keys": "image",
                                           "lower": 1, "upper": 99, "b_min": 0, "b_max": 1})


@pytest.mark.parametrize(("case", "expect"), [
    ("no network_def", "has no 'network_def'"),
    ("keys", "missing keys (1): model.0.conv.weight; unexpected keys (1): extra.weight"),
    ("percentiles", "transform ScaleIntensityRangePercentilesd changes intensities non-linearly"),
])
def test_bad_bundle_exits_2_naming_the_problem(case: str, expect: str, ct_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _bad_bundle(tmp_path / "bundle", case)
    code, out = run_grid_cli(tmp_path / "grid", {"bundle": str(folder)}, ct_data)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert expect in err and str(folder) in err and "models[0].bundle" in err


@pytest.mark.parametrize(("target", "expect"), [
    ("byom_nets_missing:make", "cannot import 'byom_nets_missing' (ModuleNotFoundError"),
    ("byom_nets:not_a_network", "the factory returned str, not a torch.nn.Module"),
    ("byom_nets:nothing", "module 'byom_nets' has no attribute 'nothing'"),
])
def test_bad_factory_exits_2_naming_the_problem(target: str, expect: str, factory: Path, ct_data: Path,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = {"python": target, "classes": ["background", "spleen"]}
    code, out = run_grid_cli(tmp_path / "grid", model, ct_data)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and expect in err and target in err


def test_factory_weights_that_do_not_fit_name_the_keys(factory: Path, ct_data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    model = {"python": "byom_nets:make", "weights": str(factory), "kwargs": {"channels": [4, 16]},
             "classes": ["background", "spleen"]}
    code, out = run_grid_cli(tmp_path / "grid", model, ct_data)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "weights do not fit UNet; differing shapes (3): model.1.submodule.conv.bias: checkpoint (8,) vs model (16,)" in err


def test_a_grid_entry_names_exactly_one_source(bundle: Path, ct_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_grid_cli(tmp_path, {"bundle": str(bundle), "python": "byom_nets:make"}, ct_data)
    assert code == 2 and not out.exists()
    assert "give exactly one model source" in capsys.readouterr().err


# -- nnU-Net v2 (extra medrobust[nnunet]; skipped where nnunetv2 is not installed) ---------------------------------

CT_PROPS = {"mean": 30.0, "std": 120.0, "percentile_00_5": -150.0, "percentile_99_5": 200.0, "min": -1000.0,
            "max": 400.0, "median": 40.0}
ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]],
                        "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def nnunet_network(plans: dict[str, Any]) -> torch.nn.Module:
    """The network as nnU-Net's own inference builds it (nnunetv2.utilities.get_network_from_plans)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(2)
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 2,
                                  allow_init=True, deep_supervision=False)


def write_nnunet(folder: Path, *, checkpoint: bool = True) -> Path:
    """An nnU-Net v2 trained-model folder as nnU-Net writes it (plans, dataset, fold_0/checkpoint_final.pth)."""
    pytest.importorskip("nnunetv2")
    pytest.importorskip("dynamic_network_architectures")
    pytest.importorskip("batchgenerators")
    folder.mkdir(parents=True)
    plans = {"dataset_name": "Dataset001_Spleen", "plans_name": "nnUNetPlans", "image_reader_writer": "NibabelIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "original_median_spacing_after_transp": [2.0, 1.5, 1.5],
             "foreground_intensity_properties_per_channel": {"0": CT_PROPS},
             "configurations": {"3d_fullres": {
                 "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                 "batch_size": 2, "patch_size": [16, 16, 16], "spacing": [2.0, 1.5, 1.5],
                 "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
                 "architecture": ARCH, "batch_dice": False}}}
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1}, "numTraining": 1,
               "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    net = nnunet_network(plans)
    (folder / "fold_0").mkdir()
    if checkpoint:
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        torch.save({"network_weights": net.state_dict(), "optimizer_state": optimizer.state_dict(),
                    "grad_scaler_state": None,
                    "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)],
                                "train_losses": [np.float32(0.9)], "epoch_end_timestamps": [1.0]},
                    "_best_ema": np.float64(0.5), "current_epoch": 1,
                    "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset,
                                  "device": torch.device("cpu")},
                    "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / "fold_0" / "checkpoint_final.pth")
    return folder


def nnunet_inference(folder: Path, image: str) -> torch.Tensor:
    """nnU-Net's own reader, CT normalisation and network on one image; logits in our (x, y, z) order."""
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    plans = json.loads((folder / "plans.json").read_text(encoding="utf-8"))
    data, _ = NibabelIO().read_images([image])  # (c, z, y, x)
    x = CTNormalization(use_mask_for_norm=False, intensityproperties=CT_PROPS).run(data[0].astype(np.float32))
    net = nnunet_network(plans)  # seeded: the weights write_nnunet saved
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)[None, None].float()).permute(0, 1, 4, 3, 2)


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nnunet(tmp_path_factory.mktemp("nnunet") / "nnUNetTrainer__nnUNetPlans__3d_fullres")


def test_nnunet_source_reads_plans_checkpoint_and_ct_normalisation(nnunet_folder: Path) -> None:
    model = load_source("nnunet", nnunet_folder, fold=0)
    assert model.classes == ["background", "spleen"] and model.info.roi_size == (16, 16, 16)
    assert model.spacing == (1.5, 1.5, 2.0)  # the plan's (z, y, x) spacing in our (x, y, z) order
    imap = model.intensity
    assert imap is not None and imap.raw_unit == "HU" and (imap.offset, imap.scale) == (30.0, 120.0)
    assert imap.clip == pytest.approx(((-150 - 30) / 120, (200 - 30) / 120))


def test_nnunet_logits_equal_nnunets_own_inference(nnunet_folder: Path, ct_data: Path) -> None:
    lm = load_model(load_source("nnunet", nnunet_folder, fold=0), ct_data, "test")
    items = split_cases(ct_data)
    for case in lm.split.dataset:
        with torch.no_grad():
            ours = lm.model(case["image"][None])
        assert float((ours - nnunet_inference(nnunet_folder, items[case["id"]]["image"])).abs().max()) < TOL


def test_evaluate_nnunet_grid_with_pgd_in_hu(nnunet_folder: Path, ct_data: Path, tmp_path: Path) -> None:
    code, out = run_grid_cli(tmp_path, {"nnunet": str(nnunet_folder), "fold": 0}, ct_data)
    assert code == 0
    reference = {k: nnunet_inference(nnunet_folder, v["image"]) for k, v in split_cases(ct_data).items()}
    check_grid_against(out, ct_data, reference)
    from medrobust.report import write_report

    html = write_report(out).read_text(encoding="utf-8")
    assert "1.5 x 1.5 x 2 mm" in html and "below the lower clip" in html  # spacing and the CT clip, stated


@pytest.mark.parametrize(("broken", "expect"), [
    ("plans.json", "plans.json not found; not an nnU-Net trained-model folder"),
    ("checkpoint", "fold_0/checkpoint_final.pth not found (fold or checkpoint missing)"),
])
def test_not_an_nnunet_result_exits_2(broken: str, expect: str, ct_data: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_nnunet(tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres", checkpoint=broken != "checkpoint")
    if broken == "plans.json":
        (folder / "plans.json").unlink()
    code, out = run_grid_cli(tmp_path / "grid", {"nnunet": str(folder)}, ct_data)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and expect in err and "models[0].nnunet" in err


def _nnunet_mirrored(network: torch.nn.Module, x: torch.Tensor, mirror_axes: tuple[int, ...]) -> torch.Tensor:
    """nnU-Net's ``nnUNetPredictor._internal_maybe_mirror_and_predict``, transcribed."""
    import itertools

    prediction = network(x)
    axes = [m + 2 for m in mirror_axes]
    combinations = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    for dims in combinations:
        prediction += torch.flip(network(torch.flip(x, dims)), dims)
    return prediction / (len(combinations) + 1)


def test_nnunet_mirroring_is_nnunets_test_time_augmentation(nnunet_folder: Path, ct_data: Path) -> None:
    plain, mirrored = load_source("nnunet", nnunet_folder), load_source("nnunet", nnunet_folder, mirror=True)
    lm = load_model(mirrored, ct_data, "test")
    net = nnunet_network(json.loads((nnunet_folder / "plans.json").read_text(encoding="utf-8"))).eval()
    for case in lm.split.dataset:
        x = case["image"][None]
        with torch.no_grad():
            ours = lm.model(x)
            reference = _nnunet_mirrored(net, x.permute(0, 1, 4, 3, 2), (0, 1, 2)).permute(0, 1, 4, 3, 2)
            assert float((ours - reference).abs().max()) < TOL
            assert float((ours - plain.network(x)).abs().max()) > 10 * TOL  # the augmentation changes the logits
    assert any("mirroring test-time augmentation over axes [0, 1, 2]" in n for n in mirrored.notes)
    x = lm.split.dataset[0]["image"][None].requires_grad_(True)
    lm.model(x).sum().backward()  # an attack differentiates through it
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_nnunet_data_is_resampled_to_the_plan_spacing(nnunet_folder: Path, tmp_path: Path) -> None:
    """Cases at 1 mm are opened at the plan's 1.5 x 1.5 x 2 mm, the grid the network (and the attack) sees."""
    rng = np.random.default_rng(1)
    cases = [{"id": "fine", "image": rng.normal(0, 100, (24, 24, 24)).astype(np.float32),
              "label": (rng.random((24, 24, 24)) > 0.5).astype(np.uint8)}]
    save_decathlon(tmp_path, {"training": cases, "test": cases}, ["background", "spleen"], np.eye(4),
                   name="ct", description="1 mm CT-like case", modality="CT")
    lm = load_model(load_source("nnunet", nnunet_folder), tmp_path / "dataset.json", "test")
    item = lm.split.dataset[0]
    assert tuple(item["image"].shape[1:]) == (16, 16, 12)
    assert [round(float(s), 3) for s in item["meta"]["spacing"]] == [1.5, 1.5, 2.0]
    assert lm.info.extra["spacing"] == [1.5, 1.5, 2.0]
