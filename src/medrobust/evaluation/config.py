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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from medrobust.evaluation.specs import (
    AttackSpec,
    CorruptionSpec,
    DataSpec,
    ModelSpec,
    Perturbation,
    resolve_path,
)
from medrobust.evaluation.specs.base import _Strict

METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "accuracy", "ssim", "psnr")
# Fields that change what is written, never the numbers: excluded from the config hash.
_OUTPUT_ONLY = {"out", "examples", "save_adversarial", "masking_check"}
# How the runs are batched, never what they give (tests/evaluation/test_batching.py): not hashed either.
_EXECUTION_ONLY = {"batch_size", "sw_batch_size"}
class GridConfigError(ValueError):
    """A grid configuration is invalid; the message names the key path and allowed values.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.config import parse_config
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.json").write_text("{}")  # a checkpoint must exist
        >>> data = {"models": [{"name": "unet", "checkpoint": "model.json"}], "data": {"demo": "segmentation"},
        ...         "perturbations": [{"attack": "pgd", "eps": [2, 4], "eps_unit": "1/255"},
        ...                           {"corruption": "noise", "severities": [1, 3]}]}
        >>> from medrobust.evaluation.config import GridConfigError
        >>> try:
        ...     parse_config({**data, "perturbations": [{"attack": "pgd", "eps": [-1]}]}, base_dir=folder)
        ... except GridConfigError as exc:
        ...     print(exc)
        invalid grid config (dict):
          perturbations[0].eps[0]: Input should be greater than or equal to 0 (got -1)
    """


class GridConfig(_Strict):
    """A validated evaluation grid (see the module docstring for the YAML form).

    Build it with :func:`load_config` or :func:`parse_config`; it is frozen.

    Attributes:
        models: the models (names unique).
        data: the cases.
        perturbations: :class:`AttackSpec` and :class:`CorruptionSpec` entries (labels unique).
        metrics: extra metrics; Dice (segmentation) and accuracy (classification) are always
            computed, hd95, nsd (normalised surface Dice), ssim and psnr only when listed.
        include_background: segmentation scores count the background class too (the VAFA
            papers report Dice and HD95 with background); default False, stated in the report.
        nsd_tolerance_mm: the surface Dice's tolerance in mm (> 0, default 1).
        per_channel_ranges: budgets in "1/255" take each (case, channel)'s own range, as SEAT
            does (:mod:`medrobust.attacks.channel_ranges`); default None: on for multi-channel
            z-scored data, stated in the report; false: one range per case over all channels.
        seed: the base seed: each attack run derives its own from it
            (:func:`~medrobust.evaluation.core.run_seed`); corruptions use it as is.
        out: the output folder (default ``results``, resolved against the YAML's folder).
        save_adversarial: write adversarial NIfTI images.
        roi_size: the sliding-window ROI; None uses the checkpoint's.
        overlap: sliding-window overlap in [0, 1).
        examples: example slices kept per model (the worst cases).
        masking_check: run the gradient-masking checks.
        device: the torch device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``
            or ``mps``; under torchrun a bare ``cuda`` or ``auto`` means ``cuda:LOCAL_RANK``.
            ``medrobust evaluate --device`` overrides it.
        batch_size: cases of equal shape whose clean prediction is one forward pass (>= 1);
            attacks still run case by case, each seeded by its run, so rows do not depend on it.
        sw_batch_size: windows per forward of the sliding window over volumes larger than
            the ROI (>= 1); memory grows with it. Neither batch size enters the config hash.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.config import parse_config
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.json").write_text("{}")  # a checkpoint must exist
        >>> data = {"models": [{"name": "unet", "checkpoint": "model.json"}], "data": {"demo": "segmentation"},
        ...         "perturbations": [{"attack": "pgd", "eps": [2, 4], "eps_unit": "1/255"},
        ...                           {"corruption": "noise", "severities": [1, 3]}]}
        >>> cfg = parse_config(data, base_dir=folder)
        >>> [p.label for p in cfg.perturbations], [p.levels for p in cfg.perturbations]
        (['pgd', 'noise'], [[2.0, 4.0], [1.0, 3.0]])
        >>> cfg.out == folder.resolve() / "results", len(cfg.config_hash)
        (True, 16)
    """

    models: list[ModelSpec] = Field(min_length=1)
    data: DataSpec
    perturbations: list[Perturbation] = Field(min_length=1)
    # Dice (segmentation) and accuracy (classification) are always computed; hd95, nsd, ssim
    # and psnr only when listed.
    metrics: list[Literal["dice", "hd95", "nsd", "accuracy", "ssim", "psnr"]] = Field(
        default_factory=lambda: ["dice", "accuracy", "ssim", "psnr"])  # type: ignore[arg-type]
    include_background: bool = False
    nsd_tolerance_mm: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    per_channel_ranges: bool | None = None
    seed: int = 0
    out: Path = Field(default=Path("results"), validate_default=True)
    save_adversarial: bool = False
    roi_size: list[Annotated[int, Field(ge=1)]] | None = None
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    examples: int = Field(default=3, ge=0)
    masking_check: bool = False
    device: str = "cpu"
    batch_size: int = Field(default=1, ge=1)
    sw_batch_size: int = Field(default=1, ge=1)

    @field_validator("out")
    @classmethod
    def _out(cls, v: Path, info: ValidationInfo) -> Path:
        path = resolve_path(v, info)
        assert path is not None
        return path

    @field_validator("models", "perturbations")
    @classmethod
    def _unique_names(cls, v: list[Any]) -> list[Any]:
        names: list[str] = [e.label if hasattr(e, "label") else e.name for e in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names must be unique; repeated: {', '.join(dup)} (set `name:` to tell them apart)")
        return v

    @cached_property
    def config_hash(self) -> str:
        """Stable 16-hex digest of everything that changes the numbers (see :class:`GridConfig`).

        Covers the validated config (JSON, sorted keys) minus output-only fields (out,
        examples, save_adversarial, masking_check) and the batch sizes, plus the SHA-256 of each
        checkpoint's files, so a retrained model in the same folder is a different grid.
        """
        body = self.model_dump(mode="json", exclude=_OUTPUT_ONLY | _EXECUTION_ONLY)
        for entry in body["perturbations"]:
            if entry.get("amp") is False:  # the default: hashes stay as before
                entry.pop("amp")
        body["models"] = [{k: v for k, v in m.items() if v is not None} for m in body["models"]]  # hashes stay as before
        if body.get("per_channel_ranges") is None:  # the default: hashes stay as before
            body.pop("per_channel_ranges", None)
        body["checkpoint_digests"] = {m.name: _checkpoint_digest(m.source_files) for m in self.models}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _checkpoint_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
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


def _explain(err: ErrorDetails) -> str:
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
    """Validate a config mapping; relative paths resolve against ``base_dir``.

    Args:
        data: the parsed YAML (a mapping).
        base_dir: the folder relative paths (checkpoints, datalist, out) resolve against.
        source: how error messages name the config (a file path).

    Returns:
        The validated :class:`GridConfig`.

    Raises:
        GridConfigError: ``data`` is not a mapping or fails validation; one message lists
            every problem by key path.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.config import parse_config
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.json").write_text("{}")  # a checkpoint must exist
        >>> data = {"models": [{"name": "unet", "checkpoint": "model.json"}], "data": {"demo": "segmentation"},
        ...         "perturbations": [{"attack": "pgd", "eps": [2, 4], "eps_unit": "1/255"},
        ...                           {"corruption": "noise", "severities": [1, 3]}]}
        >>> parse_config(data, base_dir=folder).models[0].name
        'unet'
    """
    if not isinstance(data, dict):
        raise GridConfigError(f"invalid grid config {source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return GridConfig.model_validate(data, context={"base": str(Path(base_dir).resolve())})
    except ValidationError as exc:
        raise _readable(exc, source) from None


def load_config(path: str | Path) -> GridConfig:
    """Read and validate a grid YAML file (relative paths resolve against its folder).

    Args:
        path: the YAML file.

    Returns:
        The validated :class:`GridConfig`.

    Raises:
        GridConfigError: the file is missing, is not valid YAML or fails validation.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.config import load_config
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.json").write_text("{}")
        >>> _ = (folder / "grid.yaml").write_text(  # YAML flow style: one line
        ...     "{models: [{name: unet, checkpoint: model.json}], data: {demo: segmentation}, "
        ...     "perturbations: [{attack: fgsm, eps: [4], eps_unit: 1/255}]}")
        >>> cfg = load_config(folder / "grid.yaml")
        >>> cfg.perturbations[0].label, cfg.out == folder.resolve() / "results"
        ('fgsm', True)
    """
    path = Path(path)
    if not path.is_file():
        raise GridConfigError(f"grid config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GridConfigError(f"grid config {path} is not valid YAML: {exc}") from None
    return parse_config(data, base_dir=path.parent, source=str(path))


def with_overrides(cfg: GridConfig, source: str, *, amp: bool | None = None, **keys: Any) -> GridConfig:
    """The grid with keys replaced by command-line flags, validated again (None keeps the YAML's value).

    Args:
        cfg: the validated grid (its paths are absolute, so no base folder is needed).
        source: how error messages name the config.
        amp: set every attack entry's ``amp``; None: as the entries say.
        **keys: top-level keys (``device``, ``batch_size``, ``sw_batch_size``) and their values.

    Returns:
        A new :class:`GridConfig` (``cfg`` itself when nothing is overridden).

    Raises:
        GridConfigError: a value the key does not take (the message names the key).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "model.json").write_text("{}")
        >>> cfg = parse_config({"models": [{"name": "m", "checkpoint": "model.json"}], "data": {"demo": "segmentation"},
        ...                     "perturbations": [{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}]}, folder)
        >>> new = with_overrides(cfg, "grid.yaml", amp=True, device="auto", batch_size=None)
        >>> new.device, new.batch_size, new.perturbations[0].amp, new.config_hash != cfg.config_hash
        ('auto', 1, True, True)
    """
    given = {k: v for k, v in keys.items() if v is not None}
    if not given and amp is None:
        return cfg
    data = {**cfg.model_dump(mode="json", exclude_unset=False), **given}
    if amp is not None:
        data["perturbations"] = [{**p, "amp": amp} if "attack" in p else p for p in data["perturbations"]]
    return parse_config(data, base_dir=cfg.out.parent, source=source)
