"""The one table of corruption parameters per severity, and argument checks (no TorchIO import).

Every strength is stated on the image rescaled to its **reference range** [lo, hi]
(``u = (x - lo) / (hi - lo)``: the IntensityMap's clip window, e.g. a CT window, or else the
case's own min..max per channel), so a level means the same on CT, MRI and 8-bit images.

==========  =====================  ====================================  =================================
corruption  parameter              severity 1, 2, 3, 4, 5                drawn once per (seed, case, name)
==========  =====================  ====================================  =================================
motion      kspace_fraction        0.2, 0.3, 0.38, 0.43, 0.47 (outer     phase axis, rotation sign,
                                   phase lines acquired after one move,  shift direction (in-plane)
                                   all on one side of the centre)
            degrees (in-plane)     30 at every level (rotation)
            translation_mm         10 at every level (in-plane shift)
spike       intensity              0.15, 0.3, 0.5, 0.75, 1               one k-space position (in-plane
                                   (spike / k-space maximum)             offset, through-plane k = 0)
ghosting    intensity              0.2, 0.4, 0.6, 0.8, 1                 phase axis, 4..10 ghosts
                                   (k-space planes damped by)            (2% of k-space centre restored)
bias_field  max_log_gain           0.3, 0.6, 1, 1.5, 2                   20 coefficients of an order-3
                                   (max abs log of the field)            polynomial, field centred on 1
blur        sigma_voxels           0.5, 0.75, 1, 1.5, 2                  -
                                   (in-plane Gaussian sigma)
noise       std_fraction           0.02, 0.04, 0.06, 0.09, 0.12          noise seed
                                   (Gaussian std / reference range)
gamma       log_gamma              0.1, 0.2, 0.3, 0.45, 0.6              sign (gamma above or below 1)
                                   (gamma = exp(+-log_gamma) on u)
resolution  factor                 1.5, 2, 3, 4, 6                       (2D: which in-plane axis)
                                   (slice thickness multiplied along
                                   the through-plane axis: a Gaussian
                                   slice profile of FWHM factor x
                                   spacing, see apply_resolution)
==========  =====================  ====================================  =================================

Motion grades the *fraction* of k-space acquired after one fixed movement: the k-space
regions are nested, so by Parseval the L2 change grows strictly with the level (growing
the movement instead is not monotone: a shift by an even number of voxels is invisible
at the Nyquist frequency, measured on 16^3 phantoms).

Calibration against seed 003's ACDC-C (the ``acdc-c`` preset,
:mod:`medrobust.corruptions.presets`): severity 5 has its movement (30 degrees, 10 mm), its
weakest spike (intensity 1; its range is 1-3, but its per-slice rescale shrinks the
spike's effect), its strongest ghosting (1) and its number of ghosts (4-10), and at
severity 5 each of the four changes the image (RMS, fraction of the range) at least as
much as the preset does on average (``tests/test_corruption_presets.py``).

The random draws depend on (seed, case, corruption) but not on the severity: the levels
of one case show the *same* artefact growing (common random numbers), so a higher level
changes the image more, and curves over severity are not blurred by new draws per level.
"""
from __future__ import annotations

import hashlib

from medrobust.registry import Registry

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# name -> parameter -> value at severities 1..5 (see the module docstring for units).
SEVERITY_TABLE: Registry[dict[str, tuple[float, ...]]] = Registry("corruption", {
    "motion": {"kspace_fraction": (0.2, 0.3, 0.38, 0.43, 0.47), "degrees": (30.0,) * 5, "translation_mm": (10.0,) * 5},
    "spike": {"intensity": (0.15, 0.3, 0.5, 0.75, 1.0)},
    "ghosting": {"intensity": (0.2, 0.4, 0.6, 0.8, 1.0)},
    "bias_field": {"max_log_gain": (0.3, 0.6, 1.0, 1.5, 2.0)},
    "blur": {"sigma_voxels": (0.5, 0.75, 1.0, 1.5, 2.0)},
    "noise": {"std_fraction": (0.02, 0.04, 0.06, 0.09, 0.12)},
    "gamma": {"log_gamma": (0.1, 0.2, 0.3, 0.45, 0.6)},
    "resolution": {"factor": (1.5, 2.0, 3.0, 4.0, 6.0)},
})
# A closed set: each name also needs its artefact in medrobust.corruptions.artefacts.
CORRUPTION_NAMES: tuple[str, ...] = SEVERITY_TABLE.names()


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a known corruption, else ValueError naming ``what`` and the allowed names.

    Args:
        name: the corruption name to check (any object).
        what: the argument's name, quoted in the error message.

    Returns:
        ``name`` as a str.

    Raises:
        ValueError: ``name`` is not one of :data:`CORRUPTION_NAMES`.

    Example:
        >>> from medrobust.corruptions.table import check_name
        >>> check_name("noise")
        'noise'
        >>> check_name("snow", "corruption")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: corruption: unknown corruption 'snow'; allowed: motion, ...
    """
    try:
        return SEVERITY_TABLE.check(name)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def check_severity(severity: object, what: str = "severity") -> int:
    """``severity`` as an int in 1..5, else ValueError naming ``what``.

    Integer-valued floats (``2.0``) are accepted; bools are not.

    Args:
        severity: the severity to check (any object).
        what: the argument's name, quoted in the error message.

    Returns:
        The severity as an int in 1..5.

    Raises:
        ValueError: ``severity`` is not an integer 1-5.

    Example:
        >>> from medrobust.corruptions.table import check_severity
        >>> check_severity(2.0)
        2
        >>> check_severity(6)
        Traceback (most recent call last):
            ...
        ValueError: severity: severity must be an integer 1-5, got 6
    """
    if (isinstance(severity, bool) or not isinstance(severity, (int, float)) or not float(severity).is_integer()
            or int(severity) not in SEVERITIES):
        raise ValueError(f"{what}: severity must be an integer 1-5, got {severity!r}")
    return int(severity)


def level(name: str, severity: int) -> dict[str, float]:
    """The table's parameters of ``name`` at ``severity`` (both checked).

    Args:
        name: one of :data:`CORRUPTION_NAMES`.
        severity: integer 1-5.

    Returns:
        Parameter name -> value at that severity (units in the module docstring).

    Raises:
        ValueError: unknown ``name`` or ``severity`` outside 1-5.

    Example:
        >>> from medrobust.corruptions.table import level
        >>> level("noise", 3)
        {'std_fraction': 0.06}
        >>> level("motion", 1)
        {'kspace_fraction': 0.2, 'degrees': 30.0, 'translation_mm': 10.0}
    """
    s = check_severity(severity)
    return {k: v[s - 1] for k, v in SEVERITY_TABLE[check_name(name)].items()}


def corruption_seed(seed: int, case_id: str, name: str) -> int:
    """63-bit seed of the random draws of one (seed, case, corruption); severity-free by design.

    The first 8 bytes of SHA-256 of seed, case_id and name joined by the unit separator
    (0x1F), shifted right by one bit: the same on every machine and Python version (unlike
    ``hash``).

    Args:
        seed: the run's seed.
        case_id: the case's identifier.
        name: the corruption name.

    Returns:
        An int in ``[0, 2**63)``.

    Example:
        >>> from medrobust.corruptions.table import corruption_seed
        >>> corruption_seed(0, "case1", "noise")
        9117438239030146130
        >>> corruption_seed(0, "case1", "noise") == corruption_seed(0, "case2", "noise")
        False
    """
    key = f"{int(seed)}\x1f{case_id}\x1f{name}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1
