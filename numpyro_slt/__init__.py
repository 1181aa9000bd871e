"""numpyro-slt: singular learning theory for NumPyro.

Turn a model into a localized, tempered posterior (:func:`temper`, :func:`localize`,
:func:`restrict`), sample it with the :class:`SGLD` kernel inside ``numpyro.infer.MCMC`` and
estimate the local learning coefficient with :func:`llc`.
"""

from ._compile_cache import reuse_loop_compilation, use_compilation_cache
from .checkpoint import sample_checkpointed
from .estimators.llc import estimate_llc, llc
from .estimators.pca import per_layer_pca, response_pca
from .estimators.susceptibility import response_matrix, susceptibilities
from .handlers import localize, restrict, temper
from .kernels import SGLD, SGLDState, identity, rmsprop
from .report import ChainReport, check_chains

__version__ = "0.1.0"

__all__ = ["SGLD", "SGLDState", "identity", "rmsprop", "temper", "localize", "restrict",
           "llc", "estimate_llc", "sample_checkpointed", "check_chains", "ChainReport",
           "susceptibilities", "response_matrix", "response_pca", "per_layer_pca",
           "reuse_loop_compilation", "use_compilation_cache"]
