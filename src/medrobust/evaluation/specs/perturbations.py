"""The grid's corruption and certification entries, and ``Perturbation``: any entry, told apart by its key.

An entry with ``attack:`` is an :class:`~medrobust.evaluation.specs.attack.AttackSpec`, one
with ``corruption:`` a :class:`CorruptionSpec`, one with ``certify:`` a :class:`CertifySpec`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from medrobust.evaluation.specs.attack import AttackSpec
from medrobust.evaluation.specs.base import _Strict
from medrobust.units import Unit


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
