"""The ``acdc-c`` preset (seed 003's ACDC-C) and the severity scale calibrated against it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio

from medrobust.corruptions import SEVERITY_TABLE, corrupt
from medrobust.corruptions.presets import PRESETS, corrupt_preset
from medrobust.data.phantoms import phantom_segmentation

CARDIAC = np.diag([1.4, 1.4, 8.0, 1.0])  # ACDC-like: thick short-axis slices along axis 2


@pytest.fixture(scope="module")
def volumes() -> list[torch.Tensor]:
    return [phantom_segmentation((48, 48, 8), seed=s)[0][0] for s in range(3)]


def test_acdc_c_has_seed_003s_strengths() -> None:
    assert PRESETS["acdc-c"] == {
        "motion": {"degrees": 30.0, "translation": 10.0, "num_transforms": 2},
        "spike": {"num_spikes": (1, 1), "intensity": (1.0, 3.0)},
        "ghosting": {"num_ghosts": (4, 10), "intensity": (0.5, 1.0)},
        "bias_field": {"coefficients": 0.5, "order": 3},
    }


@pytest.mark.parametrize("name", sorted(PRESETS["acdc-c"]))
def test_preset_draws_are_torchio_transforms_within_the_ranges(volumes: list[torch.Tensor], name: str) -> None:
    x = volumes[0]
    y, params = corrupt_preset(x, "acdc-c", name, seed=1, affine=CARDIAC, case_id="p1")
    again, params_again = corrupt_preset(x, "acdc-c", name, seed=1, affine=CARDIAC, case_id="p1")
    other, params_other = corrupt_preset(x, "acdc-c", name, seed=2, affine=CARDIAC, case_id="p1")
    assert torch.equal(y, again) and params == params_again and params["drawn"] != params_other["drawn"]
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.allclose(y, x, atol=1e-3)
    drawn = params["drawn"]
    if name == "motion":
        assert np.abs(drawn["degrees"]).max() <= 30 and np.abs(drawn["translation"]).max() <= 10
        assert len(drawn["times"]) == 2
    elif name == "spike":
        assert 1 <= drawn["intensity"] <= 3 and len(drawn["spikes_positions"]) == 1
    elif name == "ghosting":
        assert 0.5 <= drawn["intensity"] <= 1 and 4 <= drawn["num_ghosts"] <= 10
    else:
        assert len(drawn["coefficients"]) == 20 and max(abs(c) for c in drawn["coefficients"]) <= 0.5
    # as the seed: every slice keeps its own intensity range (slices along the thick axis 2)
    assert torch.allclose(y.amin((0, 1, 2)), x.amin((0, 1, 2)), atol=1e-5)
    assert torch.allclose(y.amax((0, 1, 2)), x.amax((0, 1, 2)), atol=1e-5)


def test_preset_applies_the_drawn_transform_to_the_stack_of_slices(volumes: list[torch.Tensor]) -> None:
    """The recorded draw, replayed by TorchIO on the seed's (C, slices, H, W) layout, gives the image."""
    x = volumes[1]
    y, params = corrupt_preset(x, "acdc-c", "bias_field", seed=0, affine=CARDIAC, case_id="b")
    lo, hi = x.amin(), x.amax()
    stack = ((x - lo) / (hi - lo)).permute(0, 3, 1, 2)
    field = tio.BiasField(coefficients=params["drawn"]["coefficients"], order=3)(tio.ScalarImage(tensor=stack)).data
    lo_s, hi_s = stack.amin((2, 3), keepdim=True), stack.amax((2, 3), keepdim=True)
    lo_f, hi_f = field.amin((2, 3), keepdim=True), field.amax((2, 3), keepdim=True)
    expected = (lo_s + (field - lo_f) / (hi_f - lo_f) * (hi_s - lo_s)).permute(0, 2, 3, 1) * (hi - lo) + lo
    assert torch.allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS["acdc-c"]))
def test_severity_five_reaches_the_presets_mean_strength(volumes: list[torch.Tensor], name: str) -> None:
    def rms(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).pow(2).mean().sqrt() / (b.amax() - b.amin()))

    runs = [(i, x, k) for i, x in enumerate(volumes) for k in range(3)]
    preset = np.mean([rms(corrupt_preset(x, "acdc-c", name, seed=k, affine=CARDIAC, case_id=f"c{i}")[0], x)
                      for i, x, k in runs])
    top = np.mean([rms(corrupt(x, name, 5, seed=k, affine=CARDIAC, case_id=f"c{i}")[0], x) for i, x, k in runs])
    assert top >= preset, (name, top, preset)


def test_severity_five_parameters_reach_the_preset() -> None:
    acdc = PRESETS["acdc-c"]
    assert SEVERITY_TABLE["motion"]["degrees"][4] >= acdc["motion"]["degrees"]
    assert SEVERITY_TABLE["motion"]["translation_mm"][4] >= acdc["motion"]["translation"]
    assert SEVERITY_TABLE["spike"]["intensity"][4] >= acdc["spike"]["intensity"][0]
    assert SEVERITY_TABLE["ghosting"]["intensity"][4] >= acdc["ghosting"]["intensity"][1]


@pytest.mark.parametrize("bad, word", [({"preset": "acdc"}, "preset"), ({"name": "blur"}, "name"),
                                       ({"image": torch.rand(1, 8, 8)}, "image")])
def test_bad_preset_arguments(bad: dict, word: str) -> None:
    args = {"image": torch.rand(1, 8, 8, 6), "preset": "acdc-c", "name": "spike", **bad}
    with pytest.raises(ValueError, match=word):
        corrupt_preset(args.pop("image"), args.pop("preset"), args.pop("name"))


# -- resolution on thin volumes ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(24, 24, 6), (24, 24, 7), (24, 24, 9), (6, 6), (7, 7), (9, 9), (24, 6)], ids=str)
def test_each_resolution_severity_changes_a_thin_volume_more(shape: tuple[int, ...]) -> None:
    """Strictly more change per severity, also where the slice (or 2D: drawn in-plane) axis is thin."""
    x = phantom_segmentation(shape, seed=shape[-1])[0][0]
    affine = np.diag([1.0, 1.0, 6.0, 1.0]) if len(shape) == 3 else None
    change = []
    for s in range(1, 6):
        y, params = corrupt(x, "resolution", s, seed=0, affine=affine, case_id="thin")
        assert params["drawn"]["axis"] == 2 or len(shape) == 2, params["drawn"]
        change.append(float((y - x).abs().mean()))
    assert change[0] > 0 and all(a < b for a, b in zip(change, change[1:])), change


def test_resolution_records_the_slice_profile() -> None:
    """The slices get ``factor`` times thicker: a Gaussian of FWHM ``spacing * sqrt(factor**2 - 1)``."""
    x = phantom_segmentation((16, 16, 8), seed=0)[0][0]
    for factor, s in zip(SEVERITY_TABLE["resolution"]["factor"], range(1, 6)):
        _, params = corrupt(x, "resolution", s, seed=0, affine=CARDIAC, case_id="p")
        drawn = params["drawn"]
        assert drawn["axis"] == 2 and drawn["slice_thickness_mm"] == pytest.approx(8.0 * factor)
        assert drawn["fwhm_mm"] == pytest.approx(8.0 * np.sqrt(factor ** 2 - 1))
    axes = {corrupt(phantom_segmentation((16, 16), seed=0)[0][0], "resolution", 5, case_id=c)[1]["drawn"]["axis"]
            for c in "abcdefgh"}
    assert axes == {0, 1}  # 2D: a drawn in-plane axis (array axes 0 and 1 of (C, H, W, 1))
