"""``numpyro_slt.nn``: a decoder-only transformer in Equinox (attention-only or with MLPs), its
component addressing, the restricted posterior of a component and the observables evaluated at
its draws.

>>> import jax
>>> from numpyro_slt.nn import AttentionOnlyTransformer, TransformerConfig, get_component
>>> model = AttentionOnlyTransformer(TransformerConfig(), key=jax.random.key(0))  # paper shape
>>> head = get_component(model, "1:6")  # W_Q, W_K, W_V, W_O, b_Q, b_K, b_V of head 6, layer 1

Modules: ``transformer`` (the network), ``components`` (names → parameter slices), ``heads``
(a head's weights as :class:`HeadWeights`), ``caches`` (the frozen part of the network computed
once), ``posterior`` (the NumPyro models), ``restricted`` (:func:`restricted_posterior`, which
chooses among them), ``observables``, ``induction`` (mechanistic scores), ``train``,
``default`` (the shipped model).

Import it as ``numpyro_slt.nn``; the top-level package does not import it.
"""

from .components import (
    ComponentSpec,
    check_head_decomposition,
    component_mask,
    component_names,
    component_size,
    get_activation,
    get_component,
    get_components,
    head_outputs,
    named_parameters,
    parse_component,
    replace_parameters,
    set_component,
    set_components,
)
from .config import TransformerConfig
from .default import load_default
from .heads import HeadWeights
from .hf import from_pretrained
from .induction import (
    copy_ablation,
    copy_losses,
    default_probe_length,
    induction_scores,
    previous_token_scores,
    score_from_patterns,
    score_table,
)
from .module import module_components, module_model, module_observables, module_sites
from .observables import ObservableEvaluator
from .restricted import RestrictedPosterior, restricted_posterior
from .train import (
    TrainConfig,
    batch_at,
    learning_rate_schedule,
    load_checkpoint,
    make_optimizer,
    train,
)
from .transformer import (
    ActivationCache,
    AttentionOnlyTransformer,
    Transformer,
    cross_entropy_from_logits,
)
from .transformer_lens import from_transformer_lens

__all__ = [
    "TrainConfig",
    "batch_at",
    "copy_ablation",
    "copy_losses",
    "default_probe_length",
    "from_pretrained",
    "from_transformer_lens",
    "induction_scores",
    "learning_rate_schedule",
    "load_checkpoint",
    "make_optimizer",
    "previous_token_scores",
    "score_from_patterns",
    "score_table",
    "train",
    "ActivationCache",
    "AttentionOnlyTransformer",
    "Transformer",
    "ComponentSpec",
    "HeadWeights",
    "ObservableEvaluator",
    "RestrictedPosterior",
    "TransformerConfig",
    "check_head_decomposition",
    "component_mask",
    "component_names",
    "component_size",
    "cross_entropy_from_logits",
    "get_activation",
    "get_component",
    "get_components",
    "head_outputs",
    "load_default",
    "module_components",
    "module_model",
    "module_observables",
    "module_sites",
    "named_parameters",
    "parameter_count",
    "parse_component",
    "replace_parameters",
    "restricted_posterior",
    "set_component",
    "set_components",
]


def parameter_count(model: AttentionOnlyTransformer) -> int:
    """Number of scalar parameters (array leaves) of a model."""
    return sum(int(v.size) for v in named_parameters(model).values())
