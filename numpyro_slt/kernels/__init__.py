"""MCMC kernels: SGLD, SGHMC, SGNHT and their preconditioners."""

from .preconditioners import Preconditioner, identity, rmsprop
from .sghmc import SGHMC, SGHMCState
from .sgld import SGLD, SGLDState, upgrade_state
from .sgnht import SGNHT, SGNHTState

__all__ = ["SGLD", "SGLDState", "SGHMC", "SGHMCState", "SGNHT", "SGNHTState", "upgrade_state",
           "Preconditioner", "identity", "rmsprop"]
