"""FGSM, BIM, PGD (no random start), PGD-L2 and MI-FGSM equal torchattacks to 1e-6."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import BIM, FGSM, MIFGSM, PGD
from medrobust.units import Budget

ta_fgsm = pytest.importorskip("torchattacks.attacks.fgsm")  # torchattacks is installed with --no-deps
from torchattacks.attacks.bim import BIM as TaBIM  # noqa: E402
from torchattacks.attacks.mifgsm import MIFGSM as TaMIFGSM  # noqa: E402
from torchattacks.attacks.pgd import PGD as TaPGD  # noqa: E402
from torchattacks.attacks.pgdl2 import PGDL2 as TaPGDL2  # noqa: E402

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 7


def classifier() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 7 * 7, 4))


@pytest.fixture()
def batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = classifier()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y


# The budget is stated in "1/255", so step sizes are too: 2 means 2/255.
CASES = [
    ("fgsm", lambda b: FGSM(b, return_best=False), lambda m: ta_fgsm.FGSM(m, eps=EPS)),
    ("bim", lambda b: BIM(b, steps=STEPS, step_size=2, return_best=False),
     lambda m: TaBIM(m, eps=EPS, alpha=ALPHA, steps=STEPS)),
    ("pgd", lambda b: PGD(b, steps=STEPS, step_size=2, random_start=False, return_best=False),
     lambda m: TaPGD(m, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)),
    ("mifgsm", lambda b: MIFGSM(b, steps=STEPS, step_size=2, decay=1.0, return_best=False),
     lambda m: TaMIFGSM(m, eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0)),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_linf_attacks_match_torchattacks(batch, name, ours, theirs) -> None:
    model, x, y = batch
    budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
    expected = theirs(model)(x, y)
    got = ours(budget)(model, x, y)
    assert (got - x).abs().amax() > EPS / 2, "the attack should move the image"
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_targeted_pgd_matches_torchattacks(batch) -> None:
    model, x, y = batch
    target = (y + 1) % 4
    ta = TaPGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)
    ta.set_mode_targeted_by_label(quiet=True)
    expected = ta(x, target)
    budget = Budget.linf(EPS, valid_range=(0.0, 1.0))
    got = PGD(budget, steps=STEPS, step_size=ALPHA, random_start=False, targeted=True, return_best=False)(model, x, target)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_l2_pgd_matches_torchattacks(batch) -> None:
    model, x, y = batch
    expected = TaPGDL2(model, eps=0.5, alpha=0.1, steps=STEPS, random_start=False)(x, y)
    got = PGD(Budget.l2(0.5, valid_range=(0.0, 1.0)), steps=STEPS, step_size=0.1, random_start=False,
              return_best=False)(model, x, y)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_best_iterate_is_at_least_as_strong_as_torchattacks(batch) -> None:
    model, x, y = batch
    budget = Budget.linf(EPS, valid_range=(0.0, 1.0))
    ta_adv = TaPGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)(x, y)
    ours = PGD(budget, steps=STEPS, step_size=ALPHA, random_start=False).run(model, x, y)
    with torch.no_grad():
        ta_loss = nn.functional.cross_entropy(model(ta_adv), y, reduction="none")
    assert (ours.best_loss >= ta_loss - 1e-6).all()
