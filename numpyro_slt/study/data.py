"""The token data of a study, all deterministic functions of ``config.seed``:

- ``sampling``: windows of the sampling distribution q, the model's training mixture (windows of
  the offline code, legal, prose and math corpora, a share of them carrying a repeated segment);
- ``eval``: further windows of q, the fixed evaluation set of L_q;
- ``probes``: the probe distributions q′, held-out windows of each genre (another shuffle of the
  corpora) plus the synthetic patterns ``induction`` (random tokens repeated twice) and
  ``brackets`` (nested bracket text).
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
    """The token arrays of a study: ``sampling`` (q, [N, n_ctx]), ``eval`` (the fixed L_q set) and
    ``probes`` (name → [P, length])."""
    n_ctx, vocab = network.config.n_ctx, network.config.d_vocab
    if tokenizer.get_vocab_size() > vocab:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the "
                         f"network's d_vocab={vocab}; pass the network's own tokenizer.")
    windows = _sampling_windows(tokenizer, config, n_ctx, vocab)
    return {"sampling": windows[: config.sampling_sequences],
            "eval": windows[config.sampling_sequences:],
            "probes": _probes(tokenizer, config, n_ctx, vocab)}


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
