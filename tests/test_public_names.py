"""The package exports what its docstring lists, lazily."""
from __future__ import annotations

import re
import subprocess
import sys

import medrobust
from medrobust import attacks


def test_every_public_name_resolves_to_its_module_object() -> None:
    for name in medrobust.__all__:
        assert getattr(medrobust, name) is not None, name
    assert medrobust.VAFA is attacks.VAFA and medrobust.PGD is attacks.PGD
    assert set(medrobust.__all__) <= set(dir(medrobust))


def test_docstring_names_are_exported() -> None:
    listed = set(re.findall(r"``(\w+)``", medrobust.__doc__ or ""))
    assert listed and listed <= set(medrobust.__all__)


def test_attacks_export_vafa_and_its_registry_helpers() -> None:
    assert {"VAFA", "attack_names", "attack_budget_kind", "register_attack"} <= set(attacks.__all__)
    assert all(hasattr(attacks, name) for name in attacks.__all__)
    assert attacks.attack_budget_kind("vafa3d") == "dct"


def test_import_medrobust_stays_light() -> None:
    code = "import sys, medrobust; print('torch' in sys.modules, 'medrobust.attacks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
