"""The token data of a study, all deterministic functions of ``config.seed``:

- ``sampling``: windows of the sampling distribution q, the model's training mixture (windows of
  the offline code, legal, prose and math corpora, a share of them carrying a repeated segment);
- ``eval``: further windows of q, the fixed evaluation set of L_q;
- ``probes``: the probe distributions q′, held-out windows of each genre (another shuffle of the
  corpora) plus the synthetic patterns ``induction`` (random tokens repeated twice) and
  ``brackets`` (nested bracket text).

With ``config.data`` the sampling and evaluation windows are instead the first windows of that
source (:func:`~numpyro_slt.data.token_windows`, rows shuffled by the seed), the evaluation set
the ``eval_sequences`` after the ``sampling_sequences``; with ``config.probes`` the probes are
exactly the sources named there, ``probe_sequences`` windows each. Windows have
``config.context_length`` tokens (default: the network's ``n_ctx``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import StudyConfig

__all__ = ["study_data"]

#: Seed offsets: the mixture and the held-out probes draw from streams apart from the chains'.
MIXTURE_SEED_OFFSET = 7
PROBE_SEED_OFFSET = 1000


def study_data(network, tokenizer, config: StudyConfig) -> dict[str, Any]:
    """The token arrays of a study: ``sampling`` (q, [N, context]), ``eval`` (the fixed L_q set)
    and ``probes`` (name → [P, length]); the context is ``config.context_length`` or the
    network's ``n_ctx``."""
    vocab = network.config.d_vocab
    if tokenizer.get_vocab_size() > vocab:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the "
                         f"network's d_vocab={vocab}; pass the network's own tokenizer.")
    n_ctx = context_length(network, config)
    if config.data is None:
        windows = _sampling_windows(tokenizer, config, n_ctx, vocab)
    else:
        windows = _user_windows(config.data, tokenizer, n_ctx,
                                config.sampling_sequences + config.eval_sequences,
                                config.seed + MIXTURE_SEED_OFFSET, "StudyConfig.data")
    if config.probes is None:
        probes = _probes(tokenizer, config, n_ctx, vocab)
    else:
        probes = {name: _user_windows(source, tokenizer, n_ctx, config.probe_sequences,
                                      config.seed + PROBE_SEED_OFFSET,
                                      f"StudyConfig.probes[{name!r}]")
                  for name, source in config.probes}
    return {"sampling": windows[: config.sampling_sequences],
            "eval": windows[config.sampling_sequences:],
            "probes": probes}


def context_length(network, config: StudyConfig) -> int:
    """Tokens per window of the study: ``config.context_length``, at most the network's
    ``n_ctx``, or ``n_ctx`` itself when None."""
    n_ctx = network.config.n_ctx
    if config.context_length is None:
        return n_ctx
    if config.context_length > n_ctx:
        raise ValueError(f"StudyConfig.context_length={config.context_length} exceeds the "
                         f"network's context n_ctx={n_ctx}; choose at most {n_ctx}.")
    return config.context_length


def _user_windows(source: str, tokenizer, n_ctx: int, count: int, seed: int,
                  argument: str) -> np.ndarray:
    """``count`` windows of ``source`` (:func:`~numpyro_slt.data.token_windows`), texts joined
    with the end-of-text token when the tokenizer has one and with nothing otherwise."""
    from ..data import token_windows
    from ..data.tokenizer import EOS_TOKEN

    separator = EOS_TOKEN if tokenizer.token_to_id(EOS_TOKEN) is not None else None
    return token_windows(source, tokenizer, n_ctx, count, seed=seed,
                         separator_token=separator, argument=argument)


def _sampling_windows(tokenizer, config: StudyConfig, n_ctx: int, vocab: int) -> np.ndarray:
    """Windows of q: the genres' token streams cut into n_ctx windows, then the induction
    mixture (a share of windows carrying a repeated segment) drawn from them."""
    from ..data import GENRES, genre_texts
    from ..data.synthetic import induction_mixture
    from ..data.windows import chunk_ids

    need = config.sampling_sequences + config.eval_sequences
    chars = max(50_000, 5 * n_ctx * need // len(GENRES))
    stream = np.concatenate([
        chunk_ids(genre_texts(g, max_chars=chars, seed=config.seed), tokenizer, n_ctx).reshape(-1)
        for g in GENRES
    ])
    return induction_mixture(config.seed + MIXTURE_SEED_OFFSET, stream, need, n_ctx,
                             repeat_fraction=config.repeat_fraction,
                             random_fraction=config.random_fraction, vocab_low=1,
                             vocab_high=vocab)


def _probes(tokenizer, config: StudyConfig, n_ctx: int, vocab: int) -> dict[str, np.ndarray]:
    """Probe name → [probe_sequences, length]: held-out windows of every genre, then the
    induction and bracket patterns."""
    from ..data import GENRES, genre_texts
    from ..data.probes import bracket_sequences
    from ..data.synthetic import induction_sequences
    from ..data.windows import chunk_ids

    held_out = config.seed + PROBE_SEED_OFFSET
    probes: dict[str, np.ndarray] = {}
    for g in GENRES:
        texts = genre_texts(g, max_chars=max(20_000, 6 * n_ctx * config.probe_sequences),
                            seed=held_out)
        ids = chunk_ids(texts, tokenizer, n_ctx, allow_partial=True)
        if len(ids) < config.probe_sequences:
            raise ValueError(f"the {g!r} corpus gives only {len(ids)} probe windows; lower "
                             "probe_sequences.")
        probes[g] = ids[: config.probe_sequences]
    probes["induction"] = induction_sequences(config.probe_sequences, n_ctx // 2, low=1,
                                              high=vocab, seed=held_out)
    probes["brackets"] = bracket_sequences(tokenizer, config.probe_sequences, n_ctx,
                                           seed=held_out)
    return probes
