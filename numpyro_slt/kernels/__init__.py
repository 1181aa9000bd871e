"""MCMC kernels: SGLD and its preconditioners."""

from .preconditioners import Preconditioner, identity, rmsprop
from .sgld import SGLD, SGLDState, upgrade_state

__all__ = ["SGLD", "SGLDState", "upgrade_state", "Preconditioner", "identity", "rmsprop"]
