"""The grid's attack entry: an attack, its eps list, norm and unit, and its target and region."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medrobust.evaluation.regions import Region, parse_region
from medrobust.evaluation.specs.base import _Strict, resolve_path
from medrobust.evaluation.targets import TARGET_FORMS, Target, parse_target
from medrobust.units import Unit


class AttackSpec(_Strict):
    """An attack run at every eps of a list; ``name`` labels it (default: the attack name).

    Attributes:
        attack: a registered attack name (``medrobust.attacks.attack_names()``, read when
            the config is validated: attacks added with ``register_attack`` are accepted).
        name: the perturbation label in the store (default: :attr:`label`).
        eps: the stated budgets, finite and >= 0, in ``eps_unit``.
        eps_unit: ``"model"``, ``"raw"``, ``"HU"`` or ``"1/255"`` (of the valid range).
        norm: ``"linf"``, ``"l2"`` or ``"dct"``: one the attack registered
            (``attack_norms``); ``"dct"`` is the frequency budget of the VAFA attacks,
            eps = q_max >= 1 in ``"1/255"``.
        options: keyword options of the attack (steps, loss, ...); never the budget.
        target: what a targeted attack aims at (:mod:`medrobust.evaluation.targets`):
            ``least_likely``, ``random``, ``class:K``, ``{map: {from: to}}`` or
            ``{labels: "targets/{id}.nii.gz"}`` (per-case target label maps); giving one
            makes the attack targeted, and ``options: {targeted: true}`` needs one.
        region: where the attack may change the image (:mod:`medrobust.evaluation.regions`):
            ``body``, ``{classes: [names], margin_mm: m}`` or ``{mask: "folder/{id}.nii.gz"}``
            (a relative mask pattern is resolved against the grid file's folder); None:
            everywhere.
        amp: run the model's forward in bfloat16 (``torch.autocast``) while the attack's loss,
            gradient sign, projection and the scores stay float32; rows record it in
            ``options_json`` (``"amp": "bf16"``) and ``method``.

    Example:
        >>> from medrobust.evaluation.specs import AttackSpec
        >>> spec = AttackSpec(attack="pgd", eps=[2, 4], eps_unit="1/255", norm="l2", options={"steps": 10})
        >>> spec.label, spec.levels
        ('pgd-l2', [2.0, 4.0])
    """

    attack: str
    name: str | None = None
    eps: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(min_length=1)
    eps_unit: Unit = "model"
    # "dct": VAFA's frequency budget; each eps is q_max in 1/255 of the valid range. It is a
    # threat model of its own, so it never joins the worst case over L-inf attacks.
    norm: Literal["linf", "l2", "dct"] = "linf"
    options: dict[str, Any] = Field(default_factory=dict)
    target: str | dict[str, Any] | None = None
    region: str | dict[str, Any] | None = None
    amp: bool = False

    @field_validator("region")
    @classmethod
    def _region_form(cls, v: str | dict[str, Any] | None, info: ValidationInfo) -> str | dict[str, Any] | None:
        if v is None:
            return v
        try:
            region = parse_region(v)
        except ValueError as err:
            raise ValueError(str(err).removeprefix("region: ")) from None
        if region.kind == "mask":
            return {"mask": str(resolve_path(Path(region.pattern), info))}
        return v

    @property
    def parsed_region(self) -> Region | None:
        """The parsed :class:`~medrobust.evaluation.regions.Region`, or None (the whole image)."""
        return None if self.region is None else parse_region(self.region)

    @field_validator("target")
    @classmethod
    def _target_form(cls, v: str | dict[str, Any] | None, info: ValidationInfo) -> str | dict[str, Any] | None:
        if v is None:
            return v
        try:
            target = parse_target(v)
        except ValueError as err:
            raise ValueError(str(err).removeprefix("target: ")) from None
        if target.kind == "labels":  # a relative pattern is resolved against the grid file's folder
            return {"labels": str(resolve_path(Path(target.pattern), info))}
        return v

    @model_validator(mode="after")
    def _targeted_needs_target(self) -> AttackSpec:
        if self.options.get("targeted") and self.target is None:
            raise ValueError(f"target: options.targeted is true but no target is given; allowed: {TARGET_FORMS} "
                             f"(the true label is not a target)")
        if self.target is not None and self.options.get("targeted") is False:
            raise ValueError("options.targeted: false contradicts `target:` (a target makes the attack targeted)")
        return self

    @property
    def parsed_target(self) -> Target | None:
        """The parsed :class:`~medrobust.evaluation.targets.Target`, or None (untargeted)."""
        return None if self.target is None else parse_target(self.target)

    @model_validator(mode="after")
    def _budget_norm(self) -> AttackSpec:
        from medrobust.attacks.registry import FREQUENCY_NORM, attack_norms  # lazy: attacks pull in MONAI

        norms = attack_norms(self.attack)
        if self.norm not in norms:
            hint = " ('dct', eps = q_max, is the budget of frequency attacks only)" if FREQUENCY_NORM in (
                self.norm, *norms) else ""
            raise ValueError(f"norm: attack {self.attack!r} takes a budget of norm {' or '.join(map(repr, norms))}, "
                             f"got {self.norm!r}{hint}")
        frequency = self.norm == FREQUENCY_NORM
        if frequency and (self.eps_unit != "1/255" or min(self.eps) < 1):
            raise ValueError("eps: for norm 'dct' each eps is q_max >= 1 in eps_unit '1/255' (of the valid range)")
        if frequency and "q_max" in self.options:
            raise ValueError("options: q_max is given by eps for norm 'dct'")
        return self

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str) -> str:
        from medrobust.attacks.registry import attack_names  # lazy: attacks pull in MONAI

        names = attack_names()  # read now: attacks registered after import count
        if v.lower() not in names:
            raise ValueError(f"unknown attack {v!r}; allowed: {', '.join(names)}")
        return v.lower()  # names are case-insensitive, like get_attack

    @field_validator("options")
    @classmethod
    def _no_budget(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = sorted({"eps", "norm", "budget", "eps_unit"} & set(v))
        if clash:
            raise ValueError(f"{', '.join(clash)} belong(s) beside `attack:`, not inside `options:`")
        return v

    @property
    def label(self) -> str:
        """The perturbation label: ``name``, else the attack, suffixed ``-l2`` for an L2 budget."""
        return self.name or (self.attack if self.norm in ("linf", "dct") else f"{self.attack}-{self.norm}")

    @property
    def levels(self) -> list[float]:
        """The eps list (the levels a grid runs)."""
        return list(self.eps)
