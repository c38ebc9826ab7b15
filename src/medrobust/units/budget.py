"""``Budget``: a norm ball of radius eps intersected with the valid range, in model units."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from medrobust.units.conversion import UNITS, to_model_units
from medrobust.units.intensity import IntensityMap
from medrobust.units.tensors import Scalar, expand_to, per_sample

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")


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

        Arguments, result, errors and shapes as for :meth:`linf`.

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
