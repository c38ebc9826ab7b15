"""The entries of an evaluation grid: models, data and perturbations (attacks, corruptions, certification).

:class:`~medrobust.evaluation.config.GridConfig` holds lists of these; each is a strict
pydantic model (unknown keys are errors) whose validators name the key and the allowed
values. Relative paths resolve against the grid file's folder (the ``base`` of the
validation context).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medrobust.evaluation.regions import Region, parse_region
from medrobust.evaluation.targets import TARGET_FORMS, Target, parse_target
from medrobust.units import Unit

MODEL_SOURCES: tuple[str, ...] = ("checkpoint", "bundle", "python", "torchscript", "nnunet")
_SOURCE_OPTIONS = ("weights", "kwargs", "classes", "normalization", "fold", "configuration", "mirror", "trust_code")
_MODEL_SUFFIXES = {".json", ".yaml", ".yml", ".pt", ".pth", ".safetensors", ".ts"}



def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path of the grid file made absolute against the validation context's ``base`` folder.

    Args:
        value: the path as written (``~`` expanded), or None.
        info: the validator's info; ``info.context["base"]`` is the grid file's folder.

    Returns:
        The absolute path, or None.
    """
    if value is None:
        return None
    base = Path((info.context or {}).get("base", "."))
    return (base / value).expanduser().resolve() if not value.expanduser().is_absolute() else value.expanduser()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One model: a display name and exactly one source (:mod:`medrobust.models.sources`).

    Attributes:
        name: the model's name in the store and the report (non-empty, unique in a grid).
        checkpoint: the ``model.json`` file; relative paths resolve against the YAML's folder
            (the ``base`` of the validation context); it must exist.
        bundle: a MONAI bundle folder.
        python: ``"package.module:factory"`` (with ``weights``, ``kwargs``, ``classes``).
        torchscript: a TorchScript file (runs its code: needs ``trust_code: true``).
        nnunet: an nnU-Net v2 trained-model folder (with ``fold``, ``configuration`` and
            ``mirror``: nnU-Net's mirroring test-time augmentation inside the model, off by default).
        weights, kwargs, classes, normalization, fold, configuration, mirror, trust_code: the
            source's options (each source names those it takes).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.specs import ModelSpec
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.json").write_text("{}")
        >>> spec = ModelSpec.model_validate({"name": "unet", "checkpoint": "model.json"}, context={"base": folder})
        >>> spec.checkpoint == folder.resolve() / "model.json"
        True
    """

    name: str = Field(min_length=1)
    checkpoint: Path | None = None
    bundle: Path | None = None
    python: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    torchscript: Path | None = None
    nnunet: Path | None = None
    weights: Path | None = None
    kwargs: dict[str, Any] | None = None
    classes: list[str] | None = None
    normalization: str | None = None
    fold: int | Literal["all"] | None = None
    configuration: str | None = None
    mirror: bool | None = None
    trust_code: bool | None = None

    @field_validator("checkpoint", "bundle", "torchscript", "nnunet", "weights")
    @classmethod
    def _exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        path = resolve_path(v, info)
        folder = info.field_name in ("bundle", "nnunet")
        if path is not None and not (path.is_dir() if folder else path.is_file()):
            raise ValueError(f"{info.field_name} {'folder' if folder else 'file'} not found: {path}")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in MODEL_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one model source ({', '.join(MODEL_SOURCES)}), got "
                             f"{', '.join(given) or 'none'}")
        return self

    @property
    def source(self) -> tuple[str, Path | str]:
        """(source kind, its file, folder or ``module:factory``)."""
        kind = next(k for k in MODEL_SOURCES if getattr(self, k) is not None)
        return kind, getattr(self, kind)

    @property
    def source_options(self) -> dict[str, Any]:
        """The options given for the source (those not None)."""
        return {k: getattr(self, k) for k in _SOURCE_OPTIONS if getattr(self, k) is not None}

    @property
    def source_files(self) -> list[Path]:
        """The files whose bytes make the model (hashed into the grid's config hash)."""
        kind, target = self.source
        files = [self.weights] if self.weights is not None else []
        if kind == "checkpoint":
            files += [Path(target), Path(target).with_suffix(".safetensors")]
        elif kind in ("bundle", "nnunet"):
            files += sorted(p for p in Path(target).rglob("*") if p.is_file() and p.suffix in _MODEL_SUFFIXES)
        elif kind == "torchscript":
            files.append(Path(target))
        return files


class DataSpec(_Strict):
    """Cases to evaluate: ``datalist`` + ``split``, or ``demo``.

    The datalist is a Decathlon JSON, a CSV or a class-folder root; a normalisation spec
    string may replace the checkpoint's.

    Attributes:
        datalist: a Decathlon ``dataset.json``, a classification CSV or a folder of class
            folders (resolved like :attr:`ModelSpec.checkpoint`; it must exist).
        split: the split of the datalist to evaluate (default ``"test"``).
        demo: ``"segmentation"`` or ``"classification"``: a generated demo set instead.
        normalization: a normalisation spec string; None takes the checkpoint's.
        max_cases: evaluate at most this many cases (>= 1); None for all.

    Exactly one of ``datalist`` and ``demo`` is given.

    Example:
        >>> from medrobust.evaluation.specs import DataSpec
        >>> DataSpec(demo="classification", max_cases=2).max_cases
        2
    """

    datalist: Path | None = None
    split: str = "test"
    demo: Literal["segmentation", "classification"] | None = None
    normalization: str | None = None
    max_cases: int | None = Field(default=None, ge=1)

    @field_validator("datalist")
    @classmethod
    def _exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        path = resolve_path(v, info)
        if path is not None and not path.exists():
            raise ValueError(f"datalist not found: {path} (a Decathlon dataset.json, a classification CSV "
                             "or a folder of class folders)")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.datalist is None) == (self.demo is None):
            raise ValueError("give exactly one of `datalist` (with `split`) or `demo` (segmentation|classification)")
        return self


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


class CorruptionSpec(_Strict):
    """A corruption (``medrobust.corruptions``) at severities 1-5 (rows use ``eps_unit="severity"``).

    The only option is ``through_plane`` (the slice axis 0-2, default: the largest spacing).

    Attributes:
        corruption: a corruption name (``medrobust.corruptions.table.CORRUPTION_NAMES``).
        name: the perturbation label in the store (default: the corruption name).
        severities: severities 1-5 to run.
        options: only ``through_plane`` (0, 1 or 2).

    Example:
        >>> from medrobust.evaluation.specs import CorruptionSpec
        >>> spec = CorruptionSpec(corruption="motion", severities=[1, 3], options={"through_plane": 2})
        >>> spec.label, spec.levels
        ('motion', [1.0, 3.0])
    """

    corruption: str
    name: str | None = None
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("corruption")
    @classmethod
    def _known(cls, v: str) -> str:
        from medrobust.corruptions.table import CORRUPTION_NAMES  # light: no TorchIO

        if v not in CORRUPTION_NAMES:
            raise ValueError(f"unknown corruption {v!r}; allowed: {', '.join(CORRUPTION_NAMES)}")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - {"through_plane"})
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; allowed: through_plane (slice axis 0, 1 or 2)")
        if v.get("through_plane") not in (None, 0, 1, 2) or isinstance(v.get("through_plane"), bool):
            raise ValueError(f"through_plane must be a spatial axis 0, 1 or 2, got {v['through_plane']!r}")
        return v

    @property
    def label(self) -> str:
        """The perturbation label: ``name``, else the corruption name."""
        return self.name or self.corruption

    @property
    def levels(self) -> list[float]:
        """The severities as floats (stored in the ``eps_stated`` column)."""
        return [float(s) for s in self.severities]


class CertifySpec(_Strict):
    """Randomized-smoothing certification (:mod:`medrobust.certify`) at each noise level sigma.

    Each (model, case, sigma) gives one row (``kind = "certification"``, ``eps_stated`` =
    sigma): its score is the certified accuracy / mean certified Dice at radius 0, and
    ``options_json`` holds the curve over ``radii`` (in ``unit``), which the report draws
    beside the empirical L2 worst case.

    Attributes:
        certify: ``"gaussian"`` (Cohen et al. 2019; SegCertify for segmenters).
        name: the perturbation label (default ``certify-gaussian``).
        sigma: the noise levels (> 0) in ``unit``.
        unit: ``"model"``, ``"raw"``, ``"HU"`` or ``"1/255"``.
        n0: selection samples; n: estimation samples; alpha: the error level (family-wise
            over a volume's voxels).
        tau: SegCertify's threshold in (0.5, 1] (segmenters), None: per-voxel radii.
        correction: ``"holm"`` or ``"bonferroni"`` (None: the certifier's default).
        radii: the radii (>= 0, in ``unit``) of the certified curve; None: 0 to 2 sigma.

    Example:
        >>> spec = CertifySpec(certify="gaussian", sigma=[0.25], n=50)
        >>> spec.label, spec.levels, spec.radii_for(0.25)
        ('certify-gaussian', [0.25], [0.0, 0.0625, 0.125, 0.25, 0.375, 0.5])
    """

    certify: Literal["gaussian"]
    name: str | None = None
    sigma: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    unit: Unit = "model"
    n0: int = Field(default=10, ge=1)
    n: int = Field(default=100, ge=1)
    alpha: float = Field(default=0.001, gt=0, lt=1)
    tau: float | None = Field(default=None, gt=0.5, le=1)
    correction: Literal["holm", "bonferroni"] | None = None
    radii: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = None

    @property
    def label(self) -> str:
        """The perturbation label: ``name``, else ``certify-gaussian``."""
        return self.name or f"certify-{self.certify}"

    @property
    def levels(self) -> list[float]:
        """The sigma list (the levels a grid runs)."""
        return list(self.sigma)

    def radii_for(self, sigma: float) -> list[float]:
        """The radii of the certified curve at noise level ``sigma`` (``radii`` or 0 to 2 sigma)."""
        return list(self.radii) if self.radii is not None else [sigma * f for f in (0, 0.25, 0.5, 1, 1.5, 2)]


def _kind(v: object) -> str | None:
    if isinstance(v, dict):
        return ("attack-entry" if "attack" in v else "corruption-entry" if "corruption" in v else
                "certify-entry" if "certify" in v else None)
    return ("attack-entry" if isinstance(v, AttackSpec) else "corruption-entry" if isinstance(v, CorruptionSpec) else
            "certify-entry" if isinstance(v, CertifySpec) else None)


Perturbation = Annotated[Annotated[AttackSpec, Tag("attack-entry")] | Annotated[CorruptionSpec, Tag("corruption-entry")]
                         | Annotated[CertifySpec, Tag("certify-entry")],
                         Discriminator(_kind, custom_error_type="perturbation_kind",
                                       custom_error_message="each entry needs `attack:`, `corruption:` or `certify:`")]
