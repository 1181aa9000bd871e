"""Training, checkpoints and induction scores of ``numpyro_slt.nn`` on tiny models."""

from __future__ import annotations

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_slt.data.synthetic import induction_mixture, repeated_random_tokens
from numpyro_slt.nn import AttentionOnlyTransformer, TransformerConfig
from numpyro_slt.nn.induction import (
    _ablated_copy_losses,
    _losses_with_mean_head,
    copy_ablation,
    copy_losses,
    induction_scores,
    previous_token_scores,
    score_from_patterns,
    score_table,
)
from numpyro_slt.nn.train import (
    TrainConfig,
    batch_at,
    learning_rate_schedule,
    load_checkpoint,
    train,
)
from numpyro_slt.nn.train_checkpoints import CHECKPOINT_JSON

CFG = TransformerConfig(n_layers=2, n_heads=2, d_model=32, d_head=16, n_ctx=32, d_vocab=64)


def _net(seed: int = 0, config: TransformerConfig = CFG) -> AttentionOnlyTransformer:
    return AttentionOnlyTransformer(config, key=jax.random.PRNGKey(seed))


def _leaves(net):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(net)]


def _same(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    # A periodic base stream (learnable) with repeated segments mixed in.
    base = np.tile(np.arange(0, 64, 3), 400) % 64
    return induction_mixture(0, base, 128, 32, 0.6, vocab_low=0, vocab_high=64)


# ------------------------------------------------------------------------ induction scores


def _hand_patterns(length: int) -> np.ndarray:
    """[layer 2, head 2, 2L, 2L]: 1:0 exact induction, 0:1 exact previous-token, others uniform."""
    seq = 2 * length
    uniform = np.tril(np.ones((seq, seq))) / np.arange(1, seq + 1)[:, None]
    prev = np.zeros((seq, seq))
    prev[0, 0] = 1.0
    prev[np.arange(1, seq), np.arange(seq - 1)] = 1.0
    ind = np.eye(seq)
    ind[np.arange(length, seq)] = 0.0
    ind[np.arange(length, seq), np.arange(1, length + 1)] = 1.0
    patterns = np.stack([np.stack([uniform, prev]), np.stack([ind, uniform])])
    assert np.allclose(patterns.sum(-1), 1.0)
    return patterns


def test_scores_on_hand_built_patterns():
    length = 8
    p = _hand_patterns(length)
    induction, previous = score_from_patterns(p, length)
    assert induction.shape == previous.shape == (2, 2)
    assert float(induction[1, 0]) == pytest.approx(1.0)
    assert float(previous[0, 1]) == pytest.approx(1.0)
    # The exact previous-token head puts nothing on q - L + 1 (L > 2), and vice versa.
    assert float(induction[0, 1]) == pytest.approx(0.0)
    assert float(previous[1, 0]) == pytest.approx(0.0)
    # Uniform causal head: A[q, k] = 1/(q+1).
    uni_ind = np.mean([1.0 / (q + 1) for q in range(length, 2 * length)])
    uni_prev = np.mean([1.0 / (q + 1) for q in range(1, 2 * length)])
    assert float(induction[0, 0]) == pytest.approx(uni_ind, rel=1e-6)
    assert float(previous[1, 1]) == pytest.approx(uni_prev, rel=1e-6)
    # A batch axis is averaged over.
    batched = np.stack([p, p[:, ::-1]])
    ind_b, _ = score_from_patterns(batched, length)
    assert float(ind_b[1, 0]) == pytest.approx(0.5 * (1.0 + uni_ind), rel=1e-6)
    with pytest.raises(ValueError, match="repeated twice"):
        score_from_patterns(p, length + 1)


def test_repeated_random_tokens():
    key = jax.random.PRNGKey(3)
    t = repeated_random_tokens(key, 5, 7, 10, 20)
    assert t.shape == (5, 14) and t.dtype == jnp.int32
    assert np.array_equal(t[:, :7], t[:, 7:])
    assert int(t.min()) >= 10 and int(t.max()) < 20
    assert np.array_equal(t, repeated_random_tokens(key, 5, 7, 10, 20))
    assert not np.array_equal(t, repeated_random_tokens(jax.random.PRNGKey(4), 5, 7, 10, 20))
    with pytest.raises(ValueError, match="vocab_low"):
        repeated_random_tokens(key, 5, 7, 20, 10)


def test_network_scores_agree_with_patterns():
    net = _net()
    tokens = repeated_random_tokens(jax.random.PRNGKey(1), 4, 10, 0, 64)
    patterns = jax.vmap(net.attention_patterns)(tokens)
    ind, prev = score_from_patterns(patterns, 10)
    np.testing.assert_allclose(induction_scores(net, tokens), ind, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(previous_token_scores(net, tokens), prev, rtol=1e-5, atol=1e-7)
    first, second = copy_losses(net, tokens)
    losses = np.asarray(jax.vmap(net.token_losses)(tokens))
    assert first == pytest.approx(losses[:, :9].mean(), rel=1e-5)
    assert second == pytest.approx(losses[:, 10:19].mean(), rel=1e-5)
    table = score_table(net, jax.random.PRNGKey(2), num_sequences=4, length=8)
    assert len(table["heads"]) == 4 and table["best_induction"]["head"].startswith("1:")
    assert table["best_previous_token"]["head"].startswith("0:")
    assert np.all(np.asarray(table["induction"]) >= 0)
    json.dumps(table)  # plain data
    with pytest.raises(ValueError, match="d_vocab"):
        induction_scores(net, tokens + 60)


def test_ablation_with_its_own_output_changes_nothing():
    """_losses_with_mean_head given a sequence's own head outputs reproduces its losses, for
    every head; and a network that predicts nothing has no copying to share out."""
    net = _net()
    tokens = repeated_random_tokens(jax.random.PRNGKey(1), 3, 10, 0, 64)
    for t in tokens:
        own = net.run_with_cache(t).head_out
        for layer, head in [(0, 0), (1, 1)]:
            np.testing.assert_allclose(
                _losses_with_mean_head(net, t, jnp.int32(layer), jnp.int32(head), own),
                net.token_losses(t), rtol=1e-5, atol=1e-6)
    # with one sequence, the mean over sequences is the sequence's own output
    second = np.asarray(_ablated_copy_losses(net, tokens[:1], 10))
    np.testing.assert_allclose(second, copy_losses(net, tokens[:1])[1], rtol=1e-5)
    flat = eqx.tree_at(lambda m: m.W_U, net, jnp.zeros_like(net.W_U))
    with pytest.raises(ValueError, match="does not copy"):
        copy_ablation(flat, tokens)
    assert score_table(flat, jax.random.PRNGKey(2), num_sequences=2, length=8)[
        "copy_ablation"] is None


# ------------------------------------------------------------------------ schedule, batches, data


def test_schedule_and_config():
    c = TrainConfig(steps=100, warmup_steps=10, learning_rate=1e-2, final_lr_fraction=0.1)
    s = learning_rate_schedule(c)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(5e-3)
    assert float(s(10)) == pytest.approx(1e-2)
    assert float(s(55)) == pytest.approx(1e-3 + 9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert float(s(100)) == pytest.approx(1e-3)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=-1.0)


def test_batches_depend_on_seed_and_step_only(data):
    d = jnp.asarray(data)
    assert np.array_equal(batch_at(d, 0, 7, 4), batch_at(d, 0, 7, 4))
    assert not np.array_equal(batch_at(d, 0, 7, 4), batch_at(d, 0, 8, 4))
    assert not np.array_equal(batch_at(d, 1, 7, 4), batch_at(d, 0, 7, 4))


def test_induction_mixture():
    base = np.arange(1000) % 50
    a = induction_mixture(5, base, 200, 32, 0.5, vocab_low=50, vocab_high=64)
    assert a.shape == (200, 32) and a.dtype == np.int32
    assert np.array_equal(a, induction_mixture(5, base, 200, 32, 0.5, vocab_low=50,
                                               vocab_high=64))
    random_rows = (a >= 50).any(axis=1)  # rows carrying a random-token segment
    assert 0.1 < random_rows.mean() < 0.45
    # A random segment always appears twice.
    for row in a[random_rows]:
        idx = np.flatnonzero(row >= 50)
        assert len(idx) % 2 == 0
        half = len(idx) // 2
        assert np.array_equal(row[idx[:half]], row[idx[half:]])
    none = induction_mixture(5, base, 50, 32, 0.0)
    assert all(np.array_equal(np.diff(r) % 50, np.ones(31)) for r in none)  # untouched windows
    with pytest.raises(ValueError, match="segment"):
        induction_mixture(5, base, 10, 32, 0.5, max_segment=20)


# ------------------------------------------------------------------------ training


def test_training_lowers_the_loss_and_is_deterministic(data):
    c = TrainConfig(steps=60, batch_size=8, learning_rate=1e-2, warmup_steps=5, eval_every=30,
                    checkpoint_every=0, seed=1)
    net_a, hist_a = train(_net(), data, c, progress=False)
    assert len(hist_a["loss"]) == 60
    assert np.mean(hist_a["loss"][-10:]) < np.mean(hist_a["loss"][:5]) - 1.0
    assert [e["step"] for e in hist_a["eval"]] == [30, 60]
    assert np.asarray(hist_a["eval"][-1]["induction"]).shape == (2, 2)
    net_b, hist_b = train(_net(), data, c, progress=False)
    assert _same(net_a, net_b) and hist_a["loss"] == hist_b["loss"]
    net_c, _ = train(_net(), data, TrainConfig(**{**c.to_dict(), "seed": 2}), progress=False)
    assert not _same(net_a, net_c)


def test_resume_equals_uninterrupted_bit_for_bit(data, tmp_path):
    c = TrainConfig(steps=40, batch_size=8, learning_rate=5e-3, warmup_steps=5, eval_every=20,
                    checkpoint_every=10, seed=3, eval_sequences=2)
    full, hist_full = train(_net(), data, c, progress=False)
    d = tmp_path / "run"
    half, _ = train(_net(), data, c, checkpoint_dir=d, stop_at=20, progress=False)
    assert json.loads((d / CHECKPOINT_JSON).read_text())["step"] == 20
    assert not _same(half, full)
    # Resume from a differently initialised network: its values are replaced by the checkpoint's.
    resumed, hist_res = train(_net(99), data, c, checkpoint_dir=d, resume=True, progress=False)
    assert _same(resumed, full)
    assert hist_res["loss"] == hist_full["loss"]
    assert hist_res["eval"] == hist_full["eval"] and len(hist_full["eval"]) == 2
    assert _same(load_checkpoint(d, CFG), full)
    assert len(list(d.glob("state_*.eqx"))) == 1 and not list(d.glob(".*tmp"))
    # The data and training config must match on resume.
    with pytest.raises(ValueError, match="learning_rate"):
        train(_net(), data, TrainConfig(**{**c.to_dict(), "learning_rate": 1e-3}),
              checkpoint_dir=d, resume=True, progress=False)
    with pytest.raises(ValueError, match="token array differs"):
        train(_net(), data[::-1], c, checkpoint_dir=d, resume=True, progress=False)


def test_checkpoint_errors(data, tmp_path):
    c = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0, checkpoint_every=0)
    d = tmp_path / "ck"
    net, _ = train(_net(), data, c, checkpoint_dir=d, progress=False)
    assert _same(load_checkpoint(d / CHECKPOINT_JSON), net)
    other = TransformerConfig(n_layers=2, n_heads=2, d_model=48, d_head=8, n_ctx=32, d_vocab=64)
    with pytest.raises(ValueError, match=r"d_head.*d_model|d_model") as err:
        load_checkpoint(d, other)
    assert "d_head" in str(err.value) and "d_model" in str(err.value)
    with pytest.raises(ValueError, match="model config does not match"):
        train(_net(config=other), data, c, checkpoint_dir=d, resume=True, progress=False)

    state = next(d.glob("state_*.eqx"))
    raw = state.read_bytes()
    state.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(d)
    flipped = bytearray(raw)
    flipped[-3] ^= 0xFF
    state.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(d)
    state.write_bytes(raw)
    meta = (d / CHECKPOINT_JSON).read_text()
    (d / CHECKPOINT_JSON).write_text(meta[: len(meta) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(d)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere")
