"""medrobust: attack, harden and evaluate medical-image models.

Public names (design.md): ``Budget``, ``IntensityMap`` (units), ``build_model``,
``SlidingWindow``, ``Ensemble`` (models), the attacks ``FGSM``, ``BIM``, ``PGD``, ``MIFGSM``,
``APGD``, ``Square``, ``GaussianNoise``, ``VAFA`` (attacks).
"""
from medrobust.units import Budget, IntensityMap

__version__ = "0.1.0"
__all__ = ["Budget", "IntensityMap", "__version__"]
