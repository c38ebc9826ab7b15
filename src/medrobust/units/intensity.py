"""``IntensityMap``: the normalisation ``x_model = (x_raw - offset) / scale`` a data pipeline applied."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medrobust.units.tensors import Scalar, _as_tensor


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
