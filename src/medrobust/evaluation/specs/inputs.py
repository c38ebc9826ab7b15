"""What a grid evaluates: its model entries (one source each) and its data entry (datalist or demo)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medrobust.evaluation.specs.base import _Strict, resolve_path

MODEL_SOURCES: tuple[str, ...] = ("checkpoint", "bundle", "python", "torchscript", "nnunet")
_SOURCE_OPTIONS = ("weights", "kwargs", "classes", "normalization", "fold", "configuration", "mirror", "trust_code")
_MODEL_SUFFIXES = {".json", ".yaml", ".yml", ".pt", ".pth", ".safetensors", ".ts"}


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
