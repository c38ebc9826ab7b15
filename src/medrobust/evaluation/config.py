"""Evaluation grid configuration: YAML validated with pydantic v2 (design.md section 7).

A grid lists models (checkpoints), data (a Decathlon datalist + split, or a demo set),
perturbations (attacks with an eps list; corruptions with a severity list fit the same
list) and what to write. Unknown keys are errors; every error is rewritten into one
:class:`GridConfigError` whose message names the key path (``perturbations[1].eps[0]``)
and the allowed values. Relative paths are resolved against the YAML file's folder.

Example::

    models:
      - {name: unet, checkpoint: runs/unet/model.json}
    data: {datalist: data/dataset.json, split: test, max_cases: 4}
    perturbations:
      - {attack: pgd, eps: [2, 4, 8], eps_unit: 1/255, options: {steps: 10, loss: dice_ce}}
      - {attack: square, eps: [4, 8], eps_unit: 1/255, options: {steps: 100}}
    out: results/
"""
from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError,
                      ValidationInfo, field_validator, model_validator)

# Used when medrobust.attacks is not importable (keeps config validation independent).
FALLBACK_ATTACK_NAMES: tuple[str, ...] = ("fgsm", "bim", "pgd", "mifgsm", "apgd", "apgd-ce", "apgd-dlr",
                                          "square", "gaussian", "vafa3d", "vafa2d")
METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "accuracy", "ssim", "psnr")
EPS_UNITS: tuple[str, ...] = ("model", "raw", "HU", "1/255")
# Fields that change what is written, never the numbers: excluded from the config hash.
_OUTPUT_ONLY = {"out", "examples", "save_adversarial", "masking_check"}


class GridConfigError(ValueError):
    """A grid configuration is invalid; the message names the key path and allowed values."""


def attack_names() -> tuple[str, ...]:
    """Names ``get_attack`` accepts (``medrobust.attacks.ATTACK_NAMES`` when available)."""
    try:
        from medrobust.attacks import ATTACK_NAMES  # lazy: attacks may not be importable yet
    except ImportError:
        return FALLBACK_ATTACK_NAMES
    return tuple(ATTACK_NAMES)


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    base = Path((info.context or {}).get("base", "."))
    return (base / value).expanduser().resolve() if not value.expanduser().is_absolute() else value.expanduser()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One model: a display name and the path to its ``model.json`` checkpoint."""

    name: str = Field(min_length=1)
    checkpoint: Path

    @field_validator("checkpoint")
    @classmethod
    def _exists(cls, v: Path, info: ValidationInfo) -> Path:
        path = _resolve(v, info)
        assert path is not None
        if not path.is_file():
            raise ValueError(f"checkpoint file not found: {path}")
        return path


class DataSpec(_Strict):
    """Cases to evaluate: ``datalist`` (Decathlon JSON, CSV or class-folder root) + ``split``,
    or ``demo``; a normalisation spec string (default: the checkpoint's)."""

    datalist: Path | None = None
    split: str = "test"
    demo: Literal["segmentation", "classification"] | None = None
    normalization: str | None = None
    max_cases: int | None = Field(default=None, ge=1)

    @field_validator("datalist")
    @classmethod
    def _exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        path = _resolve(v, info)
        if path is not None and not path.exists():
            raise ValueError(f"datalist not found: {path} (a Decathlon dataset.json, a classification CSV "
                             "or a folder of class folders)")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if (self.datalist is None) == (self.demo is None):
            raise ValueError("give exactly one of `datalist` (with `split`) or `demo` (segmentation|classification)")
        return self


class AttackSpec(_Strict):
    """An attack run at every eps of a list; ``name`` labels it (default: the attack name)."""

    attack: str
    name: str | None = None
    eps: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(min_length=1)
    eps_unit: Literal["model", "raw", "HU", "1/255"] = "model"
    # "dct": VAFA's frequency budget; each eps is q_max in 1/255 of the valid range. It is a
    # threat model of its own, so it never joins the worst case over L-inf attacks.
    norm: Literal["linf", "l2", "dct"] = "linf"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _frequency_budget(self) -> "AttackSpec":
        frequency = self.attack.startswith("vafa")
        if frequency != (self.norm == "dct"):
            raise ValueError("norm: 'dct' (eps = q_max) is the budget of the vafa attacks and only theirs; "
                             f"got norm {self.norm!r} for attack {self.attack!r}")
        if frequency and (self.eps_unit != "1/255" or min(self.eps) < 1):
            raise ValueError("eps: for norm 'dct' each eps is q_max >= 1 in eps_unit '1/255' (of the valid range)")
        if frequency and "q_max" in self.options:
            raise ValueError("options: q_max is given by eps for norm 'dct'")
        return self

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str) -> str:
        names = attack_names()
        if v not in names:
            raise ValueError(f"unknown attack {v!r}; allowed: {', '.join(names)}")
        return v

    @field_validator("options")
    @classmethod
    def _no_budget(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = sorted({"eps", "norm", "budget", "eps_unit"} & set(v))
        if clash:
            raise ValueError(f"{', '.join(clash)} belong(s) beside `attack:`, not inside `options:`")
        return v

    @property
    def label(self) -> str:
        return self.name or (self.attack if self.norm in ("linf", "dct") else f"{self.attack}-{self.norm}")

    @property
    def levels(self) -> list[float]:
        return list(self.eps)


class CorruptionSpec(_Strict):
    """A corruption (``medrobust.corruptions``) at severities 1-5 (rows use ``eps_unit="severity"``);
    the only option is ``through_plane`` (the slice axis 0-2, default: the largest spacing)."""

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
        return self.name or self.corruption

    @property
    def levels(self) -> list[float]:
        return [float(s) for s in self.severities]


def _kind(v: Any) -> str | None:
    if isinstance(v, dict):
        return "attack-entry" if "attack" in v else "corruption-entry" if "corruption" in v else None
    return "attack-entry" if isinstance(v, AttackSpec) else "corruption-entry" if isinstance(v, CorruptionSpec) else None


Perturbation = Annotated[Union[Annotated[AttackSpec, Tag("attack-entry")],
                               Annotated[CorruptionSpec, Tag("corruption-entry")]],
                         Discriminator(_kind, custom_error_type="perturbation_kind",
                                       custom_error_message="each entry needs `attack:` or `corruption:`")]


class GridConfig(_Strict):
    """A validated evaluation grid (see the module docstring for the YAML form)."""

    models: list[ModelSpec] = Field(min_length=1)
    data: DataSpec
    perturbations: list[Perturbation] = Field(min_length=1)
    # Dice (segmentation) and accuracy (classification) are always computed; hd95, ssim and
    # psnr only when listed.
    metrics: list[Literal["dice", "hd95", "accuracy", "ssim", "psnr"]] = Field(
        default_factory=lambda: ["dice", "accuracy", "ssim", "psnr"])
    seed: int = 0
    out: Path = Field(default=Path("results"), validate_default=True)
    save_adversarial: bool = False
    roi_size: list[Annotated[int, Field(ge=1)]] | None = None
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    examples: int = Field(default=3, ge=0)
    masking_check: bool = False
    device: str = "cpu"

    @field_validator("out")
    @classmethod
    def _out(cls, v: Path, info: ValidationInfo) -> Path:
        path = _resolve(v, info)
        assert path is not None
        return path

    @field_validator("models", "perturbations")
    @classmethod
    def _unique_names(cls, v: list[Any]) -> list[Any]:
        names = [getattr(e, "label", getattr(e, "name", None)) for e in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names must be unique; repeated: {', '.join(dup)} (set `name:` to tell them apart)")
        return v

    @cached_property
    def config_hash(self) -> str:
        """Stable 16-hex digest of everything that changes the numbers.

        Covers the validated config (JSON, sorted keys) minus output-only fields (out,
        examples, save_adversarial, masking_check) plus the SHA-256 of each checkpoint's files, so a
        retrained model in the same folder is a different grid.
        """
        body = self.model_dump(mode="json", exclude=_OUTPUT_ONLY)
        body["checkpoint_digests"] = {m.name: _checkpoint_digest(m.checkpoint) for m in self.models}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _checkpoint_digest(json_path: Path) -> str:
    h = hashlib.sha256()
    for path in (json_path, json_path.with_suffix(".safetensors")):
        if path.is_file():
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part in ("attack-entry", "corruption-entry"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _owner(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model class whose field set is addressed by ``loc[:-1]`` (for 'unknown key')."""
    model: type[BaseModel] = GridConfig
    for part in loc[:-1]:
        if part == "attack-entry":
            model = AttackSpec
        elif part == "corruption-entry":
            model = CorruptionSpec
        elif part == "models":
            model = ModelSpec
        elif part == "data":
            model = DataSpec
    return model


def _explain(err: dict[str, Any]) -> str:
    kind, msg, loc = err["type"], err["msg"], tuple(err["loc"])
    if kind == "extra_forbidden":
        return f"{_loc(loc)}: unknown key; allowed keys here: {_allowed_keys(_owner(loc))}"
    if kind == "missing":
        return f"{_loc(loc)}: required key is missing"
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        msg = f"{msg} (got {err.get('input')!r})"
    return f"{_loc(loc)}: {msg}"


def _readable(exc: ValidationError, source: str) -> GridConfigError:
    lines = [_explain(e) for e in exc.errors(include_url=False)]
    return GridConfigError(f"invalid grid config {source}:\n  " + "\n  ".join(lines))


def parse_config(data: dict[str, Any], base_dir: str | Path = ".", source: str = "(dict)") -> GridConfig:
    """Validate a config mapping; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise GridConfigError(f"invalid grid config {source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return GridConfig.model_validate(data, context={"base": str(Path(base_dir).resolve())})
    except ValidationError as exc:
        raise _readable(exc, source) from None


def load_config(path: str | Path) -> GridConfig:
    """Read and validate a grid YAML file (relative paths resolve against its folder)."""
    path = Path(path)
    if not path.is_file():
        raise GridConfigError(f"grid config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GridConfigError(f"grid config {path} is not valid YAML: {exc}") from None
    return parse_config(data, base_dir=path.parent, source=str(path))
