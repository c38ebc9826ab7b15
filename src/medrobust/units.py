"""Threat model and intensity units: ``IntensityMap`` and ``Budget`` (design.md section 4).

Budgets are stated in the units a user thinks in (Hounsfield units, raw MRI intensity,
z-score units, or "eps/255 of the valid range" as the papers write it) and converted
once into **model units**, the units of the tensor the network sees.

Conventions
-----------
- ``x_model = (x_raw - offset) / scale``, optionally clipped to ``clip`` (model units).
- ``offset`` and ``scale`` are floats, or tensors of shape ``(B,)`` for per-sample
  normalisation (z-scored MRI); every converted quantity then has shape ``(B,)``.
- A ``Budget`` holds ``eps`` and the valid range in model units as tensors of shape
  ``(B,)`` (or scalars broadcast to any batch) and the norm (``"linf"`` or ``"l2"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

Number = float | int
Scalar = Number | torch.Tensor
Norm = Literal["linf", "l2"]
Unit = Literal["model", "raw", "HU", "1/255"]
UNITS: tuple[str, ...] = ("model", "raw", "HU", "1/255")
NORMS: tuple[str, ...] = ("linf", "l2")


def _as_tensor(value: Scalar, name: str) -> torch.Tensor:
    t = value.detach().clone().to(torch.float64) if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if t.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a per-sample vector of shape (B,), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value}")
    return t


def per_sample(value: torch.Tensor, batch: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """Broadcast a scalar or ``(B,)`` tensor to shape ``(batch,)`` on ``like``'s device/dtype.

    Args:
        value: a scalar tensor, a one-element tensor, or a per-sample tensor ``(batch,)``.
        batch: the batch size B.
        like: optional tensor whose device and dtype the result takes (else ``value``'s).

    Returns:
        ``value`` broadcast to shape ``(batch,)`` (a view when ``value`` is a scalar).

    Raises:
        ValueError: ``value`` is a vector with neither 1 nor ``batch`` entries.

    Shape:
        - value: ``()``, ``(1,)`` or ``(B,)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.units import per_sample
        >>> per_sample(torch.tensor(0.5), 3).tolist()
        [0.5, 0.5, 0.5]
        >>> per_sample(torch.tensor([1, 2]), 2, like=torch.zeros(2, 1, 4, 4)).dtype
        torch.float32
    """
    if value.ndim == 1 and value.numel() not in (1, batch):
        raise ValueError(f"per-sample value has {value.numel()} entries but the batch has {batch} samples")
    out = value.reshape(-1).expand(batch) if value.numel() == 1 else value.reshape(batch)
    if like is not None:
        out = out.to(device=like.device, dtype=like.dtype)
    return out


def expand_to(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` so it broadcasts over ``x``.

    Args:
        value: per-sample values ``(B,)``.
        x: the batch to broadcast over, ``(B, C, *spatial)``.

    Returns:
        ``value`` as a view with ``x.ndim`` dimensions.

    Shape:
        - value: ``(B,)``
        - x: ``(B, *)``
        - output: ``(B, 1, ..., 1)`` with ``x.ndim`` dimensions

    Example:
        >>> import torch
        >>> from medrobust.units import expand_to
        >>> x = torch.zeros(2, 1, 4, 4, 4)
        >>> expand_to(torch.tensor([0.1, 0.2]), x).shape
        torch.Size([2, 1, 1, 1, 1])
    """
    return value.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class IntensityMap:
    """The normalisation ``x_model = (x_raw - offset) / scale`` a data pipeline applied.

    Args:
        offset: raw intensity mapped to 0 (e.g. -175 HU for an abdominal CT window), float
            or per-sample tensor ``(B,)``.
        scale: raw units per model unit (> 0), float or per-sample tensor ``(B,)``; for a
            CT window [-175, 250] HU to [0, 1] the scale is 425 HU.
        clip: optional (low, high) in model units applied after mapping (e.g. (0, 1)).
        raw_unit: name of the raw unit, "HU" for CT, "raw" otherwise.

    Raises:
        ValueError: ``scale`` not > 0, ``offset`` or ``scale`` not finite or not a scalar
            or ``(B,)`` vector, or ``clip`` not (low, high) with low < high.

    Shape:
        - offset, scale: ``()`` or ``(B,)``; per-sample maps apply to batches ``(B, *)``.

    Example:
        >>> import torch
        >>> from medrobust.units import IntensityMap
        >>> imap = IntensityMap.ct_window(-175, 250)   # offset=-175, scale=425, clip=(0, 1)
        >>> float(imap.raw_to_model(torch.tensor(37.5)))
        0.5
        >>> IntensityMap(offset=0.0, scale=-1.0)
        Traceback (most recent call last):
            ...
        ValueError: IntensityMap.scale must be > 0, got -1.0
    """

    offset: Scalar = 0.0
    scale: Scalar = 1.0
    clip: tuple[float, float] | None = None
    raw_unit: str = "raw"

    def __post_init__(self) -> None:
        scale = _as_tensor(self.scale, "IntensityMap.scale")
        _as_tensor(self.offset, "IntensityMap.offset")
        if (scale <= 0).any():
            raise ValueError(f"IntensityMap.scale must be > 0, got {self.scale}")
        if self.clip is not None and not (self.clip[0] < self.clip[1]):
            raise ValueError(f"IntensityMap.clip must be (low, high) with low < high, got {self.clip}")

    # -- constructors -------------------------------------------------------------
    @classmethod
    def identity(cls) -> IntensityMap:
        """The map that leaves intensities unchanged (offset 0, scale 1, no clip).

        Returns:
            ``IntensityMap()``: raw units are model units.

        Example:
            >>> from medrobust.units import IntensityMap
            >>> IntensityMap.identity()
            IntensityMap(offset=0.0, scale=1.0, clip=None, raw_unit='raw')
        """
        return cls()

    @classmethod
    def ct_window(cls, low_hu: float, high_hu: float) -> IntensityMap:
        """CT window [low_hu, high_hu] mapped linearly to [0, 1] and clipped.

        Args:
            low_hu: lower window edge in Hounsfield units (maps to 0).
            high_hu: upper window edge in HU (maps to 1).

        Returns:
            An IntensityMap with ``offset=low_hu``, ``scale=high_hu - low_hu``,
            ``clip=(0, 1)`` and ``raw_unit="HU"``.

        Raises:
            ValueError: ``high_hu <= low_hu``.

        Example:
            >>> import torch
            >>> from medrobust.units import IntensityMap
            >>> imap = IntensityMap.ct_window(-175, 250)
            >>> imap.raw_to_model(torch.tensor([-1000.0, 37.5, 1000.0])).tolist()
            [0.0, 0.5, 1.0]
        """
        if not high_hu > low_hu:
            raise ValueError(f"CT window needs high > low, got ({low_hu}, {high_hu})")
        return cls(offset=float(low_hu), scale=float(high_hu - low_hu), clip=(0.0, 1.0), raw_unit="HU")

    @classmethod
    def min_max(cls, low: float, high: float) -> IntensityMap:
        """Raw range [low, high] mapped to [0, 1] and clipped.

        Args:
            low: raw value mapped to 0.
            high: raw value mapped to 1.

        Returns:
            An IntensityMap with ``offset=low``, ``scale=high - low``, ``clip=(0, 1)``.

        Raises:
            ValueError: ``high <= low``.

        Example:
            >>> import torch
            >>> from medrobust.units import IntensityMap
            >>> IntensityMap.min_max(0, 255).raw_to_model(torch.tensor([63.75, 300.0])).tolist()
            [0.25, 1.0]
        """
        if not high > low:
            raise ValueError(f"min-max range needs high > low, got ({low}, {high})")
        return cls(offset=float(low), scale=float(high - low), clip=(0.0, 1.0))

    @classmethod
    def z_score(cls, mean: Scalar, std: Scalar) -> IntensityMap:
        """Z-scoring with (per-sample) mean and standard deviation; never clipped.

        Args:
            mean: the mean (float, or tensor ``(B,)`` for one mean per sample).
            std: the standard deviation (> 0; float or ``(B,)``).

        Returns:
            An IntensityMap with ``offset=mean``, ``scale=std`` and no clip.

        Raises:
            ValueError: ``std`` not > 0, or either value not finite.

        Shape:
            - mean, std: ``()`` or ``(B,)``

        Example:
            >>> import torch
            >>> from medrobust.units import IntensityMap
            >>> imap = IntensityMap.z_score(torch.tensor([100.0, 200.0]), torch.tensor([50.0, 25.0]))
            >>> imap.raw_to_model(torch.tensor([[150.0], [250.0]])).tolist()
            [[1.0], [2.0]]
        """
        return cls(offset=mean, scale=std, clip=None)

    # -- conversions --------------------------------------------------------------
    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        off = _as_tensor(self.offset, "offset").to(device=x.device, dtype=x.dtype)
        sc = _as_tensor(self.scale, "scale").to(device=x.device, dtype=x.dtype)
        if off.ndim == 1 and x.ndim >= 1:
            off = off.reshape(-1, *([1] * (x.ndim - 1)))
        if sc.ndim == 1 and x.ndim >= 1:
            sc = sc.reshape(-1, *([1] * (x.ndim - 1)))
        return off, sc

    def raw_to_model(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Map raw intensities (any shape, batch first when per-sample) to model units.

        Args:
            x_raw: intensities in raw units (e.g. HU).

        Returns:
            ``(x_raw - offset) / scale``, clipped to ``clip`` when set; dtype and device of
            ``x_raw``.

        Shape:
            - x_raw: any shape; ``(B, *)`` when offset or scale are per-sample ``(B,)``
            - output: same as ``x_raw``

        Example:
            >>> import torch
            >>> from medrobust.units import IntensityMap
            >>> IntensityMap.ct_window(-175, 250).raw_to_model(torch.tensor([-175.0, 37.5])).tolist()
            [0.0, 0.5]
        """
        off, sc = self._params(x_raw)
        out = (x_raw - off) / sc
        return out.clamp(*self.clip) if self.clip is not None else out

    def model_to_raw(self, x_model: torch.Tensor) -> torch.Tensor:
        """Inverse map ``x_model * scale + offset`` (exact inside ``clip``).

        Args:
            x_model: intensities in model units.

        Returns:
            Raw intensities, dtype and device of ``x_model`` (never clipped).

        Shape:
            - x_model: any shape; ``(B, *)`` when offset or scale are per-sample ``(B,)``
            - output: same as ``x_model``

        Example:
            >>> import torch
            >>> from medrobust.units import IntensityMap
            >>> IntensityMap.ct_window(-175, 250).model_to_raw(torch.tensor([0.0, 0.5, 1.0])).tolist()
            [-175.0, 37.5, 250.0]
        """
        off, sc = self._params(x_model)
        return x_model * sc + off

    def raw_delta_to_model(self, delta_raw: Scalar) -> torch.Tensor:
        """Convert a raw-unit *difference* (eps, step, std) to model units: ``delta / scale``.

        The offset cancels in a difference, and the clip does not apply.

        Args:
            delta_raw: the size in raw units (float or tensor ``(B,)``).

        Returns:
            float64 tensor, scalar or ``(B,)`` (per-sample value or scale).

        Raises:
            ValueError: ``delta_raw`` not finite or more than one-dimensional.

        Example:
            >>> from medrobust.units import IntensityMap
            >>> round(float(IntensityMap.ct_window(-175, 250).raw_delta_to_model(8.5)), 4)
            0.02
        """
        return _as_tensor(delta_raw, "delta") / _as_tensor(self.scale, "scale")

    def model_delta_to_raw(self, delta_model: Scalar) -> torch.Tensor:
        """Convert a model-unit *difference* to raw units: ``delta * scale``.

        Args:
            delta_model: the size in model units (float or tensor ``(B,)``).

        Returns:
            float64 tensor, scalar or ``(B,)`` (per-sample value or scale).

        Raises:
            ValueError: ``delta_model`` not finite or more than one-dimensional.

        Example:
            >>> from medrobust.units import IntensityMap
            >>> round(float(IntensityMap.ct_window(-175, 250).model_delta_to_raw(0.02)), 4)
            8.5
        """
        return _as_tensor(delta_model, "delta") * _as_tensor(self.scale, "scale")

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the map (per-sample tensors become lists).

        Returns:
            ``{"offset", "scale", "clip", "raw_unit"}``; :meth:`from_dict` inverts it.

        Example:
            >>> from medrobust.units import IntensityMap
            >>> IntensityMap.ct_window(-175, 250).to_dict()
            {'offset': -175.0, 'scale': 425.0, 'clip': [0.0, 1.0], 'raw_unit': 'HU'}
        """
        def plain(v: Scalar) -> float | list[float]:
            return v.tolist() if isinstance(v, torch.Tensor) else float(v)

        return {"offset": plain(self.offset), "scale": plain(self.scale),
                "clip": list(self.clip) if self.clip else None, "raw_unit": self.raw_unit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityMap:
        """Rebuild a map from :meth:`to_dict`'s output (lists become float64 ``(B,)`` tensors).

        Args:
            d: a dict with optional keys ``offset`` (default 0), ``scale`` (default 1),
                ``clip`` (default None) and ``raw_unit`` (default "raw").

        Returns:
            The IntensityMap.

        Raises:
            ValueError: the values do not make a valid map (see the class).

        Example:
            >>> from medrobust.units import IntensityMap
            >>> imap = IntensityMap.ct_window(-175, 250)
            >>> IntensityMap.from_dict(imap.to_dict()) == imap
            True
        """
        def back(v: Any) -> Scalar:
            return torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else float(v)

        clip = tuple(d["clip"]) if d.get("clip") else None
        return cls(offset=back(d.get("offset", 0.0)), scale=back(d.get("scale", 1.0)),
                   clip=clip, raw_unit=d.get("raw_unit", "raw"))


def to_model_units(value: Scalar, unit: str, *, intensity: IntensityMap | None,
                   valid_range: tuple[torch.Tensor, torch.Tensor] | None, what: str = "eps") -> torch.Tensor:
    """Convert a size (eps, step size, noise std) stated in ``unit`` into model units.

    Returns a float64 tensor, scalar or ``(B,)`` for per-sample intensity maps or ranges.
    ``"1/255"`` means value/255 of the valid range's width (requires a finite range).

    Args:
        value: the size (>= 0), float or per-sample tensor ``(B,)``.
        unit: "model" (returned as is), "raw" or "HU" (divided by the map's scale; "HU"
            needs a map whose ``raw_unit`` is "HU"), or "1/255" (of the range's width).
        intensity: the IntensityMap of the data; needed for "raw" and "HU".
        valid_range: (low, high) in model units, scalars or ``(B,)``; needed for "1/255".
        what: the quantity's name, used in error messages.

    Returns:
        float64 tensor in model units, scalar or ``(B,)``.

    Raises:
        ValueError: ``value`` negative or not finite, unknown ``unit``, or the map or
            finite range the unit needs is missing.

    Shape:
        - value: ``()`` or ``(B,)``
        - output: ``()`` or ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.units import IntensityMap, to_model_units
        >>> rng = (torch.tensor(0.0), torch.tensor(1.0))
        >>> round(float(to_model_units(8, "1/255", intensity=None, valid_range=rng)), 4)
        0.0314
        >>> imap = IntensityMap.ct_window(-175, 250)
        >>> round(float(to_model_units(42.5, "HU", intensity=imap, valid_range=None)), 4)
        0.1
    """
    v = _as_tensor(value, what)
    if (v < 0).any():
        raise ValueError(f"{what} must be >= 0, got {value}")
    if unit == "model":
        return v
    if unit in ("raw", "HU"):
        if intensity is None:
            raise ValueError(f"{what} in unit {unit!r} needs an IntensityMap (intensity=...) to convert to model units")
        if unit == "HU" and intensity.raw_unit != "HU":
            raise ValueError(f"{what} in 'HU' but the IntensityMap's raw unit is {intensity.raw_unit!r}; use unit='raw'")
        return intensity.raw_delta_to_model(v)
    if unit == "1/255":
        if valid_range is None:
            raise ValueError(f"{what} in unit '1/255' needs a finite valid_range")
        lo, hi = valid_range
        width = hi - lo
        if not torch.isfinite(width).all():
            raise ValueError(f"{what} in unit '1/255' needs a finite valid_range, got ({lo}, {hi})")
        return v * width / 255.0
    raise ValueError(f"unknown unit {unit!r} for {what}; allowed: {', '.join(UNITS)}")


@dataclass(frozen=True)
class Budget:
    """A perturbation budget: norm ball of radius ``eps`` intersected with the valid range.

    All fields are in **model units**; build one with :meth:`linf` / :meth:`l2`, which
    convert from the user's unit. ``eps``, ``low`` and ``high`` are float64 tensors, scalar
    or per-sample ``(B,)``.

    Attributes:
        norm: "linf" or "l2" (L2 over all channels and voxels of one sample).
        eps: radius in model units (>= 0).
        low, high: valid range of the input in model units (may be -inf/inf).
        unit, eps_stated: the unit and value the user stated (for reports).
        intensity: the IntensityMap used to convert (for reporting norms in raw units).

    Shape:
        - eps, low, high: ``()`` or ``(B,)``; :meth:`eps_for` and :meth:`range_for` give
          them per batch.

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0, 1))
        >>> round(float(budget.eps), 4), budget.describe()
        (0.0314, 'linf eps=8.0 1/255')
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(2, 1, 8, 8)
        >>> x_adv = budget.project(x, x + 0.1 * torch.randn_like(x))
        >>> bool((x_adv - x).abs().max() <= budget.eps + 1e-6), bool(x_adv.min() >= 0)
        (True, True)
    """

    norm: Norm
    eps: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    unit: str = "model"
    eps_stated: float | list[float] = 0.0
    intensity: IntensityMap | None = field(default=None, compare=False)

    @classmethod
    def _make(cls, norm: str, eps: Scalar, unit: str, valid_range: tuple[Scalar, Scalar] | None,
              intensity: IntensityMap | None) -> Budget:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} for eps; allowed: {', '.join(UNITS)}")
        if isinstance(eps, float) and math.isnan(eps):
            raise ValueError("eps must be a number >= 0, got NaN")
        if valid_range is None and intensity is not None and intensity.clip is not None:
            valid_range = intensity.clip
        if valid_range is None:
            lo, hi = torch.tensor(-math.inf, dtype=torch.float64), torch.tensor(math.inf, dtype=torch.float64)
        else:
            lo = valid_range[0].detach().to(torch.float64) if isinstance(valid_range[0], torch.Tensor) else torch.tensor(float(valid_range[0]), dtype=torch.float64)
            hi = valid_range[1].detach().to(torch.float64) if isinstance(valid_range[1], torch.Tensor) else torch.tensor(float(valid_range[1]), dtype=torch.float64)
            if torch.isnan(lo).any() or torch.isnan(hi).any() or not (lo < hi).all():
                raise ValueError(f"valid_range must be (low, high) with low < high, got {valid_range}")
        eps_model = to_model_units(eps, unit, intensity=intensity, valid_range=(lo, hi), what="eps")
        stated = eps.tolist() if isinstance(eps, torch.Tensor) else float(eps)
        return cls(norm=norm, eps=eps_model, low=lo, high=hi, unit=unit, eps_stated=stated, intensity=intensity)  # type: ignore[arg-type]

    @classmethod
    def linf(cls, eps: Scalar, unit: str = "model", valid_range: tuple[Scalar, Scalar] | None = None,
             intensity: IntensityMap | None = None) -> Budget:
        """L-infinity budget; e.g. ``Budget.linf(8, unit="HU", valid_range=(0, 1), intensity=imap)``.

        Args:
            eps: the radius (>= 0) in ``unit``, float or per-sample tensor ``(B,)``.
            unit: one of "model", "raw", "HU", "1/255" (see :func:`to_model_units`).
            valid_range: (low, high) of the input in model units, scalars or ``(B,)``;
                default the map's clip, else unbounded.
            intensity: the IntensityMap of the data (needed for "raw" and "HU").

        Returns:
            The Budget, in model units.

        Raises:
            ValueError: unknown unit, eps negative or NaN, ``valid_range`` not low < high,
                or the conversion lacks the map or finite range it needs.

        Shape:
            - eps: ``()`` or ``(B,)``; ``valid_range`` entries ``()`` or ``(B,)``

        Example:
            >>> from medrobust.units import Budget, IntensityMap
            >>> imap = IntensityMap.ct_window(-175, 250)
            >>> budget = Budget.linf(17, unit="HU", intensity=imap)   # range: the window's clip
            >>> round(float(budget.eps), 4), float(budget.low), float(budget.high)
            (0.04, 0.0, 1.0)
        """
        return cls._make("linf", eps, unit, valid_range, intensity)

    @classmethod
    def l2(cls, eps: Scalar, unit: str = "model", valid_range: tuple[Scalar, Scalar] | None = None,
           intensity: IntensityMap | None = None) -> Budget:
        """L2 budget over each whole sample (all channels and voxels).

        Args:
            eps: the radius (>= 0) in ``unit``, float or per-sample tensor ``(B,)``.
            unit: one of "model", "raw", "HU", "1/255" (see :func:`to_model_units`).
            valid_range: (low, high) of the input in model units, scalars or ``(B,)``;
                default the map's clip, else unbounded.
            intensity: the IntensityMap of the data (needed for "raw" and "HU").

        Returns:
            The Budget, in model units.

        Raises:
            ValueError: as for :meth:`linf`.

        Shape:
            - eps: ``()`` or ``(B,)``; ``valid_range`` entries ``()`` or ``(B,)``

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> budget = Budget.l2(0.5)
            >>> x = torch.zeros(2, 1, 4, 4)
            >>> budget.norm_of(budget.project(x, x + 1.0) - x).tolist()
            [0.5, 0.5]
        """
        return cls._make("l2", eps, unit, valid_range, intensity)

    def with_eps(self, eps: Scalar, unit: str | None = None) -> Budget:
        """The same budget with another radius (in ``unit``, default the budget's own).

        Args:
            eps: the new radius (>= 0), float or ``(B,)``.
            unit: its unit; default the unit this budget was stated in.

        Returns:
            A new Budget with the same norm, valid range and IntensityMap.

        Raises:
            ValueError: as for :meth:`linf`.

        Example:
            >>> from medrobust.units import Budget
            >>> budget = Budget.linf(8, unit="1/255", valid_range=(0, 1)).with_eps(4)
            >>> round(float(budget.eps), 4), budget.describe()
            (0.0157, 'linf eps=4.0 1/255')
        """
        rng = (self.low, self.high) if torch.isfinite(self.low).all() or torch.isfinite(self.high).all() else None
        return Budget._make(self.norm, eps, unit or self.unit, rng, self.intensity)

    def select(self, idx: torch.Tensor, batch: int) -> Budget:
        """The budget of the samples ``idx`` of a batch of ``batch`` (per-sample eps and range indexed).

        Args:
            idx: ``(n,)`` long indices into the batch.
            batch: the batch size B the budget was made for.

        Returns:
            A Budget for n samples (scalar fields are kept as they are).

        Example:
            >>> import torch
            >>> budget = Budget.linf(torch.tensor([0.1, 0.2, 0.3]))
            >>> budget.select(torch.tensor([2, 0]), 3).eps.tolist()
            [0.30000001192092896, 0.10000000149011612]
        """
        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[idx.to(t.device)] if t.ndim >= 1 and t.shape[0] == batch else t

        return replace(self, eps=pick(self.eps), low=pick(self.low), high=pick(self.high))

    # -- per-batch tensors -------------------------------------------------------------
    def eps_for(self, x: torch.Tensor) -> torch.Tensor:
        """Eps as a ``(B,)`` tensor on ``x``'s device and dtype.

        Args:
            x: the batch, ``(B, C, *spatial)``.

        Returns:
            The radius per sample in model units.

        Raises:
            ValueError: a per-sample eps whose length is not B.

        Shape:
            - x: ``(B, *)``
            - output: ``(B,)``

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> Budget.linf(0.25).eps_for(torch.zeros(3, 1, 4, 4)).tolist()
            [0.25, 0.25, 0.25]
        """
        return per_sample(self.eps, x.shape[0], x)

    def range_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) each broadcastable over ``x`` (shape ``(B, 1, ..., 1)``).

        Args:
            x: the batch, ``(B, C, *spatial)``.

        Returns:
            (low, high) in model units on ``x``'s device and dtype (may be -inf/inf).

        Raises:
            ValueError: a per-sample range whose length is not B.

        Shape:
            - x: ``(B, *)``
            - output: two tensors ``(B, 1, ..., 1)`` with ``x.ndim`` dimensions

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> low, high = Budget.linf(0.1, valid_range=(0, 1)).range_for(torch.zeros(2, 1, 4, 4))
            >>> low.shape, float(high.max())
            (torch.Size([2, 1, 1, 1]), 1.0)
        """
        lo = expand_to(per_sample(self.low, x.shape[0], x), x)
        hi = expand_to(per_sample(self.high, x.shape[0], x), x)
        return lo, hi

    def to_model(self, value: Scalar, unit: str | None = None, what: str = "step_size") -> torch.Tensor:
        """Convert another size (step size, noise std) from ``unit`` (default: the budget's).

        Uses the budget's IntensityMap and valid range, so a step size stated like eps
        converts like eps.

        Args:
            value: the size (>= 0), float or ``(B,)``.
            unit: its unit; default the budget's unit.
            what: the quantity's name, used in error messages.

        Returns:
            float64 tensor in model units, scalar or ``(B,)``.

        Raises:
            ValueError: as for :func:`to_model_units`.

        Example:
            >>> from medrobust.units import Budget
            >>> budget = Budget.linf(8, unit="1/255", valid_range=(0, 1))
            >>> round(float(budget.to_model(2)), 4)   # a step of 2/255
            0.0078
        """
        return to_model_units(value, unit or self.unit, intensity=self.intensity,
                              valid_range=(self.low, self.high), what=what)

    # -- geometry ----------------------------------------------------------------------
    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm ``(B,)`` of a perturbation in model units, in this budget's norm.

        Args:
            delta: the perturbation ``x_adv - x`` in model units (detached here).

        Returns:
            Max-abs (linf) or L2 over all channels and voxels of each sample.

        Shape:
            - delta: ``(B, C, *spatial)``
            - output: ``(B,)``

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> delta = torch.full((2, 1, 4, 4), 0.25)
            >>> Budget.linf(1.0).norm_of(delta).tolist(), Budget.l2(1.0).norm_of(delta).tolist()
            ([0.25, 0.25], [1.0, 1.0])
        """
        flat = delta.detach().reshape(delta.shape[0], -1)
        return flat.abs().amax(dim=1) if self.norm == "linf" else flat.norm(p=2, dim=1)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Project ``x_adv`` onto {x + δ : ‖δ‖ ≤ eps, δ = 0 outside mask} ∩ [low, high].

        For L2 the ball projection is followed by the range clip; the clip can only shrink
        |δ| entrywise, so the result stays inside the ball.

        Args:
            x: the clean batch in model units.
            x_adv: the candidate to project (same shape as ``x``).
            mask: optional ``(B, 1, *spatial)``; the perturbation is multiplied by it, so it
                is zero where the mask is 0.

        Returns:
            The projected batch, same shape, dtype and device as ``x`` (``x`` is unchanged).

        Raises:
            ValueError: a per-sample eps or range whose length is not B.

        Shape:
            - x, x_adv: ``(B, C, *spatial)``
            - mask: ``(B, 1, *spatial)`` (or anything that broadcasts)
            - output: ``(B, C, *spatial)``

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> budget = Budget.linf(0.05, valid_range=(0, 1))
            >>> _ = torch.manual_seed(0)
            >>> x = torch.rand(1, 1, 8, 8)
            >>> mask = torch.zeros(1, 1, 8, 8)
            >>> mask[..., :4] = 1
            >>> x_adv = budget.project(x, x + torch.randn_like(x), mask)
            >>> bool((x_adv - x).abs().max() <= 0.05 + 1e-6), bool((x_adv - x)[..., 4:].eq(0).all())
            (True, True)
        """
        eps = self.eps_for(x)
        delta = x_adv - x
        if mask is not None:
            delta = delta * mask
        if self.norm == "linf":
            e = expand_to(eps, x)
            delta = torch.maximum(torch.minimum(delta, e), -e)
        else:
            n = delta.reshape(delta.shape[0], -1).norm(p=2, dim=1).clamp_min(1e-12)
            factor = torch.clamp(eps / n, max=1.0)
            delta = delta * expand_to(factor, x)
        lo, hi = self.range_for(x)
        return torch.maximum(torch.minimum(x + delta, hi), lo)

    def describe(self) -> str:
        """A short label of the budget as the user stated it, for logs and reports.

        Returns:
            ``"<norm> eps=<stated eps> <unit>"`` ("per-sample" for a per-sample eps).

        Example:
            >>> from medrobust.units import Budget
            >>> Budget.l2(0.5).describe()
            'l2 eps=0.5 model'
        """
        stated = self.eps_stated if isinstance(self.eps_stated, float) else "per-sample"
        return f"{self.norm} eps={stated} {self.unit}"


def budget_for_case(norm: str, eps: Scalar, unit: str, x: torch.Tensor,
                    intensity: IntensityMap | None) -> Budget:
    """The budget for a batch ``x`` (B, C, *spatial) of cases normalised by ``intensity``.

    The valid range is the map's clip when it has one (CT window, min-max). Z-scored data
    is never clipped to [0, 1]; its valid range is each case's own intensity range in model
    units (per-sample tensors), so a perturbation never invents intensities the scan does
    not contain and "1/255" stays meaningful.

    Args:
        norm: "linf" or "l2".
        eps: the radius (>= 0) in ``unit``, float or ``(B,)``.
        unit: one of "model", "raw", "HU", "1/255".
        x: the batch in model units (only its per-case min and max are read).
        intensity: the IntensityMap the data pipeline applied, or None.

    Returns:
        The Budget; with per-case ranges its ``eps``, ``low`` and ``high`` are ``(B,)``.

    Raises:
        ValueError: unknown ``norm`` or ``unit``, or a conversion that lacks what it needs.

    Shape:
        - x: ``(B, C, *spatial)``

    Example:
        >>> import torch
        >>> from medrobust.units import IntensityMap, budget_for_case
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(2, 1, 4, 4)   # z-scored: each case keeps its own range
        >>> budget = budget_for_case("linf", 8, "1/255", x, IntensityMap.z_score(0.0, 1.0))
        >>> tuple(budget.eps.shape), bool((budget.low == x.flatten(1).amin(1)).all())
        ((2,), True)
        >>> ct = IntensityMap.ct_window(-175, 250)   # clipped: the window is the range
        >>> budget = budget_for_case("l2", 17, "HU", x, ct)
        >>> round(float(budget.eps), 4), float(budget.low), float(budget.high)
        (0.04, 0.0, 1.0)
    """
    if intensity is not None and intensity.clip is not None:
        valid: tuple[Scalar, Scalar] = intensity.clip
    else:
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        low = flat.amin(dim=1)
        valid = (low, torch.maximum(flat.amax(dim=1), low + 1e-6))  # a constant case keeps a tiny range
    make = Budget.linf if norm == "linf" else Budget.l2 if norm == "l2" else None
    if make is None:
        raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
    return make(eps, unit=unit, valid_range=valid, intensity=intensity)
