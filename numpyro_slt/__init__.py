"""numpyro-slt: singular learning theory for NumPyro.

Turn a model (or a loss function, with :func:`loss_model`) into a localized, tempered posterior
(:func:`temper`, :func:`localize`, :func:`restrict`), choose the sampler's settings with
:func:`calibrate`, sample it with the :class:`SGLD` kernel (or :class:`SGHMC`, :class:`SGNHT`)
inside ``numpyro.infer.MCMC`` (or in resumable segments with :func:`sample_checkpointed`), check
the chains with :func:`check_chains`, and estimate the local learning coefficient with
:func:`llc` (or in one call with :func:`estimate_llc`), WBIC with :func:`wbic` and
susceptibilities with :func:`susceptibilities`, and Bayesian influence with :func:`bif`.

The language-model side lives in :mod:`numpyro_slt.nn` (networks, restricted posteriors,
observables), :mod:`numpyro_slt.data` (corpora, tokenizer, probes) and :mod:`numpyro_slt.study`;
compilation helpers in :mod:`numpyro_slt.utils`. None of them is imported here, so
``import numpyro_slt`` loads neither matplotlib, tokenizers nor datasets.
"""

from .calibration import Calibration, calibrate
from .center import find_center
from .checkpoint import CheckpointedRun, sample_checkpointed
from .estimators.bif import bif, loss_kernel
from .estimators.llc import default_nbeta, estimate_llc, llc
from .estimators.patterning import patterning
from .estimators.pca import per_layer_pca, response_pca
from .estimators.susceptibility import response_matrix, susceptibilities
from .estimators.wbic import wbic
from .handlers import localize, restrict, temper
from .kernels import SGHMC, SGLD, SGNHT, SGHMCState, SGLDState, SGNHTState, identity, rmsprop
from .loss_model import LossModel, loss_model
from .report.chain_health import ChainReport, check_chains

__version__ = "0.1.0"

__all__ = ["SGLD", "SGLDState", "SGHMC", "SGHMCState", "SGNHT", "SGNHTState", "identity",
           "rmsprop", "temper", "localize", "restrict",
           "llc", "estimate_llc", "wbic", "sample_checkpointed", "CheckpointedRun", "check_chains",
           "ChainReport", "bif", "loss_kernel", "patterning", "susceptibilities", "response_matrix",
           "response_pca", "per_layer_pca",
           "find_center", "calibrate", "Calibration", "loss_model", "LossModel", "default_nbeta"]
