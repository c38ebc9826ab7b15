"""VAFT: the batch loss has its three terms, the ablation flags drop them, and the
frequency-consistency term is a normalised L1 distance of whole-patch DCTs."""
from __future__ import annotations

import pytest
import torch

from medrobust.attacks.dct import dct_nd
from medrobust.training import build_recipe
from medrobust.training.recipes import StepInfo
from medrobust.training.vaft import VAFT, frequency_consistency
from tests.training.tiny import BlobSegmentation, tiny_unet


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ds = BlobSegmentation(2)
    return torch.stack([ds[i]["image"] for i in range(2)]), torch.stack([ds[i]["label"] for i in range(2)])


def test_frequency_consistency_is_normalised_l1_of_the_dct() -> None:
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert float(frequency_consistency(a, a)) == 0.0
    dims = (2, 3)
    expected = (dct_nd(a, dims) - dct_nd(b, dims)).abs().sum() / dct_nd(a, dims).abs().sum()
    torch.testing.assert_close(frequency_consistency(a, b), expected)


@pytest.mark.parametrize("clean_term,freq_term,keys", [(True, True, {"adv_loss", "clean_loss", "freq_loss"}),
                                                       (False, False, {"adv_loss"})])
def test_vaft_loss_terms_and_ablation(clean_term: bool, freq_term: bool, keys: set[str]) -> None:
    torch.manual_seed(0)
    model, (x, y) = tiny_unet(), _batch()
    recipe = build_recipe("vaft", steps=2, block_size=(8, 8), clean_term=clean_term, freq_term=freq_term)
    loss, logs = recipe.batch_loss(model, x, y, StepInfo(0, 0, 1))
    loss.backward()
    assert keys | {"loss"} == set(logs)
    assert logs["loss"] == pytest.approx(sum(logs[k] for k in keys), rel=1e-5)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert recipe.passes_per_batch == 2 + (2 if clean_term or freq_term else 1)


def test_vaft_rejects_a_negative_frequency_weight() -> None:
    with pytest.raises(ValueError, match="freq_weight"):
        build_recipe("vaft", freq_weight=-1.0)


def test_vaft_attacks_each_z_scored_case_within_its_own_range_as_evaluation_does() -> None:
    from medrobust.evaluation.core import attack_for
    from medrobust.evaluation.specs import AttackSpec
    from medrobust.units import IntensityMap

    torch.manual_seed(0)
    model, (x, y) = tiny_unet(), _batch()
    x = torch.stack([x[0] / x[0].abs().amax(), 10 * x[1]])  # z-scored cases of very different ranges
    recipe = build_recipe("vaft", q_max=20, steps=2, block_size=(8, 8))  # the loop gives z-scored data no map
    assert isinstance(recipe, VAFT)
    x_adv = recipe.adversarial(model, x, y)

    spec = AttackSpec(attack="vafa2d", eps=[20], norm="dct", eps_unit="1/255",
                      options={"steps": 2, "block_size": [8, 8], "ssim_weight": recipe.ssim_weight})
    for i in range(2):
        case = x[i:i + 1]
        _, attack = attack_for(spec, 20, case, IntensityMap.z_score(0.0, 1.0))  # evaluation: one case at a time
        torch.testing.assert_close(x_adv[i:i + 1], attack(model, case, y[i:i + 1]))
        assert case.amin() <= x_adv[i].amin() and x_adv[i].amax() <= case.amax()  # never outside the case's range


def test_vaft_inner_attack_takes_the_published_preset() -> None:
    from medrobust.attacks.frequency import VAFA

    recipe = VAFT(preset="published", block_size=(8, 8, 8))
    inner = recipe._attack(torch.rand(1, 1, 8, 8, 8))
    reference = VAFA.published(block_size=(8, 8, 8))
    assert repr(inner).split(", step_size")[0] == repr(reference).split(", step_size")[0]
    assert recipe.params()["preset"] == "published"
    assert VAFT(block_size=(8, 8))._attack(torch.rand(1, 1, 8, 8)).ssim_weight == 0.0  # VAFA-2D: no SSIM term
    with pytest.raises(ValueError, match="preset"):
        VAFT(preset="paper")
