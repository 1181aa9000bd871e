"""Calibration: which SGLD settings (ε, nβ, γ) to trust, found by one vectorized sweep.

:func:`calibrate` runs SGLD at every setting of a grid in one compiled program
(:mod:`~numpyro_slt.calibration.sweep`), judges each by the criteria of docs/formulas.md
(:mod:`~numpyro_slt.calibration.criteria`) and recommends one (:class:`Calibration`).
"""

from .criteria import ADVICE, CRITERIA, Criteria
from .result import Calibration
from .run import calibrate

__all__ = ["calibrate", "Calibration", "Criteria", "CRITERIA", "ADVICE"]
