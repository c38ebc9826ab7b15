"""The registry helper and its users: names read at call time, duplicates refused, metadata."""
from __future__ import annotations

import pytest

from medrobust.attacks import FGSM, PGD, attack_budget_kind, attack_names, attack_norms, get_attack
from medrobust.attacks import registry as attack_registry
from medrobust.corruptions.table import check_name
from medrobust.losses import get_loss
from medrobust.registry import Registry
from medrobust.training.recipes import RECIPES, build_recipe
from medrobust.units import Budget


def test_names_are_read_at_call_time() -> None:
    reg: Registry[int] = Registry("thing", {"a": 1})
    before = reg.names()
    reg.add("b", 2, colour="red")
    assert before == ("a",) and reg.names() == ("a", "b") and list(reg) == ["a", "b"] and len(reg) == 2
    assert "b" in reg and reg["b"] == 2 and reg.info("b") == {"colour": "red"}


def test_duplicates_are_refused_unless_same_object_or_replace() -> None:
    reg: Registry[object] = Registry("thing")
    obj = object()
    reg.add("a", obj)
    assert reg.add("a", obj, size=1) is obj and reg.info("a") == {"size": 1}  # re-adding the same object
    with pytest.raises(ValueError, match="^thing 'a' is already registered$"):
        reg.add("a", object())
    other = object()
    reg.register("a", replace=True)(other)
    assert reg["a"] is other
    with pytest.raises(ValueError, match="non-empty str"):
        reg.add("", obj)


def test_unknown_names_list_the_allowed_ones() -> None:
    reg: Registry[int] = Registry("loss", {"ce": 1, "dice": 2})
    for bad in ("dce", 3, None):
        with pytest.raises(ValueError, match=r"^unknown loss .*; allowed: ce, dice$"):
            reg[bad]  # type: ignore[index]
        assert bad not in reg
    assert reg.get("dce") is None and reg.get("ce") == 1 and reg.get(3, 0) == 0  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown loss 'dce'"):
        reg.info("dce")
    with pytest.raises(ValueError, match="unknown loss 'x'"):
        get_loss("x")


def test_metadata_is_read_only() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, tags=("x",))
    with pytest.raises(TypeError):
        reg.info("a")["tags"] = ()  # type: ignore[index]


def test_attack_registered_later_is_accepted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attack_registry, "_ATTACKS", Registry("attack", attack_registry._ATTACKS))
    assert "late-fgsm" not in attack_names()
    attack_registry.register_attack("Late-FGSM", norms=("linf",))(FGSM)  # stored lower-case
    assert "late-fgsm" in attack_names() and attack_norms("LATE-fgsm") == ("linf",)
    assert attack_budget_kind("late-fgsm") == "voxel"
    assert isinstance(get_attack("late-FGSM", Budget.linf(0.1)), FGSM)
    with pytest.raises(ValueError, match="already registered"):
        attack_registry.register_attack("late-fgsm")(PGD)


def test_attack_entries_carry_their_budget_kind() -> None:
    assert attack_budget_kind("vafa3d") == attack_budget_kind("vafa2d") == "dct"
    builtin = ("fgsm", "bim", "pgd", "mifgsm", "apgd", "apgd-ce", "apgd-dlr", "square", "gaussian")
    assert {attack_budget_kind(n) for n in builtin} == {"voxel"}
    assert attack_norms("square") == ("linf",) and attack_norms("pgd") == ("linf", "l2")
    for bad in ((), ("l1",), ("linf", "dct")):
        with pytest.raises(ValueError, match="norms"):
            attack_registry.register_attack("bad-norms", norms=bad)
    with pytest.raises(ValueError, match="unknown attack 'nope'; allowed: fgsm"):
        attack_budget_kind("nope")


def test_recipes_and_corruptions_use_the_registry() -> None:
    assert isinstance(RECIPES, Registry) and "standard" in RECIPES
    with pytest.raises(ValueError, match="unknown recipe 'nope'; allowed: standard"):
        build_recipe("nope")
    with pytest.raises(ValueError, match="^name: unknown corruption 'snow'; allowed: motion"):
        check_name("snow")
