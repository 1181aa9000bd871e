"""MCMC kernels: SGLD and its preconditioners."""

from .preconditioners import Preconditioner, identity, rmsprop
from .sgld import SGLD, SGLDState

__all__ = ["SGLD", "SGLDState", "Preconditioner", "identity", "rmsprop"]
