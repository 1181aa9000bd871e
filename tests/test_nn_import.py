"""Importing Hugging Face GPT-2 / GPT-NeoX checkpoints and TransformerLens state dicts.

Tiny random models are built here with transformers (and TransformerLens when installed), saved,
imported with ``numpyro_slt.nn.from_pretrained`` / ``from_transformer_lens``, and their per-token
losses compared with the torch model's. Every weight, LayerNorm scales and shifts and all biases
included, is random, so that a wrong mapping cannot hide behind ones or zeros. No network access:
a repo id is tried only offline, against an empty temporary cache.
"""

import json
import socket
import warnings

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from numpyro_slt.nn import from_pretrained, from_transformer_lens  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
SEQ, BATCH = 24, 3


def _randomize(model, scale=0.2):
    """Every parameter random: LayerNorm scales 1 ± 0.3 and shifts ± 0.3, the rest N(0, scale²)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "ln" in name or "norm" in name:
                p.copy_((1.0 if leaf in ("weight", "w") else 0.0) + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, scale)
    return model.eval()


def _torch_losses(logits_fn, tokens):
    """Per-token next-token losses of a torch model, in float64, ``[batch, seq - 1]``."""
    with torch.no_grad():
        logits = logits_fn(torch.as_tensor(tokens)).double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -logp.gather(-1, torch.as_tensor(tokens)[:, 1:, None])[..., 0].numpy()


def _our_losses(network, tokens):
    return np.asarray(jax.vmap(network.token_losses)(np.asarray(tokens, np.int32)))


def _tokens(vocab, seed, seq=SEQ):
    return np.random.default_rng(seed).integers(0, vocab, (BATCH, seq))


def _check(network, logits_fn, vocab, seed=0):
    tokens = _tokens(vocab, seed)
    expected = _torch_losses(logits_fn, tokens)
    got = _our_losses(network, tokens)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    return float(np.max(np.abs(got - expected) / np.abs(expected)))


def _save_hf(model, folder):
    model.save_pretrained(folder)  # safetensors
    return str(folder)


# ------------------------------------------------------------------ Hugging Face models


def _gpt2(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=113, n_embd=48, n_layer=2, n_head=4, n_positions=32,
                  bos_token_id=0, eos_token_id=0)
    kwargs.update(overrides)
    config = transformers.GPT2Config(**kwargs)
    config._attn_implementation = "eager"
    return _randomize(transformers.GPT2LMHeadModel(config))


def _neox(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=80, max_position_embeddings=32)
    kwargs.update(overrides)
    config = transformers.GPTNeoXConfig(**kwargs)
    config._attn_implementation = "eager"
    return _randomize(transformers.GPTNeoXForCausalLM(config))


def _hf_logits(model):
    return lambda tokens: model(tokens).logits


GPT2_CASES = {
    "tied-gelu_new-4heads": dict(),
    "untied-relu-3heads": dict(n_embd=36, n_head=3, tie_word_embeddings=False,
                               activation_function="relu"),
    "gelu-5heads-3layers-n_inner": dict(n_embd=40, n_head=5, n_layer=3, n_inner=56,
                                        activation_function="gelu", layer_norm_epsilon=1e-3),
}


@pytest.mark.parametrize("case", sorted(GPT2_CASES))
def test_gpt2_losses_match_transformers(case, tmp_path):
    model = _gpt2(**GPT2_CASES[case])
    network, tokenizer = from_pretrained(_save_hf(model, tmp_path))
    assert tokenizer is None
    c = network.config
    assert (c.n_layers, c.n_heads, c.d_model) == (model.config.n_layer, model.config.n_head,
                                                  model.config.n_embd)
    assert c.tied_embeddings == model.config.tie_word_embeddings
    _check(network, _hf_logits(model), model.config.vocab_size)


NEOX_CASES = {
    "rotary0.25-parallel-4heads": dict(rotary_pct=0.25, use_parallel_residual=True),
    "rotary1.0-sequential-3heads": dict(hidden_size=48, num_attention_heads=3, rotary_pct=1.0,
                                        use_parallel_residual=False),
    "rotary0.5-tied-nobias-gelu_new-3heads": dict(
        hidden_size=48, num_attention_heads=3, rotary_pct=0.5, attention_bias=False,
        tie_word_embeddings=True, hidden_act="gelu_new", rotary_emb_base=500),
    "rotary0.25-sequential-relu-3layers": dict(num_hidden_layers=3, hidden_act="relu",
                                               use_parallel_residual=False,
                                               layer_norm_eps=1e-3),
}


@pytest.mark.parametrize("case", sorted(NEOX_CASES))
def test_gpt_neox_losses_match_transformers(case, tmp_path):
    model = _neox(**NEOX_CASES[case])
    network, _ = from_pretrained(_save_hf(model, tmp_path))
    c, hc = network.config, model.config
    assert c.positional == "rotary"
    rope = getattr(hc, "rope_parameters", None) or {"partial_rotary_factor": hc.rotary_pct}
    assert c.rotary_dim == int(c.d_head * rope["partial_rotary_factor"])
    assert c.parallel_residual == hc.use_parallel_residual
    _check(network, _hf_logits(model), hc.vocab_size)


def test_pythia_style_config_and_sharded_float16_weights(tmp_path):
    """The original GPT-NeoX spellings (rotary_pct, rotary_emb_base, no rope_parameters; as in
    Pythia's config.json), the old LM head name embed_out, buffers to ignore, float16 weights in
    a sharded safetensors index."""
    model = _neox(rotary_pct=0.5, rotary_emb_base=1000)
    folder = tmp_path / "pythia"
    _save_hf(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("rope_parameters", None)
    config.update(rotary_pct=0.5, rotary_emb_base=1000, rope_scaling=None,
                  torch_dtype="float16")
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    weights = {k: v.astype(np.float16) for k, v in weights.items()}
    weights["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = np.ones(8, np.float32)
    weights["gpt_neox.layers.1.attention.bias"] = np.ones((1, 1, 4, 4), bool)
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: weights[k] for k in keys}, folder / file)
    index = {"weight_map": {k: file for file, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    network, _ = from_pretrained(folder)  # a Path works too
    assert network.config.rotary_dim == 8 and network.config.rotary_base == 1000
    with torch.no_grad():  # the reference: the same float16-rounded weights, in float32
        for p in model.parameters():
            p.copy_(p.half().float())
    _check(network, _hf_logits(model), model.config.vocab_size)


def test_bfloat16_safetensors(tmp_path):
    model = _gpt2(n_layer=1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    model.float()
    network, _ = from_pretrained(str(tmp_path))
    _check(network, _hf_logits(model), model.config.vocab_size)


def test_tokenizer_json_is_returned(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog",
                                   "induction heads copy the token after an earlier match"] * 4,
                                  trainer)
    vocab = tokenizer.get_vocab_size()
    model = _neox(vocab_size=vocab, num_hidden_layers=1)
    _save_hf(model, tmp_path)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    network, loaded = from_pretrained(str(tmp_path))
    assert type(loaded).__name__ == "Tokenizer"
    ids = loaded.encode("the lazy fox copies the token").ids
    assert ids == tokenizer.encode("the lazy fox copies the token").ids
    assert len(ids) >= 2 and max(ids) < network.config.d_vocab
    losses = np.asarray(network.token_losses(np.asarray(ids, np.int32)))
    assert losses.shape == (len(ids) - 1,) and np.all(np.isfinite(losses))


# ------------------------------------------------------------------ TransformerLens


def _gpt2_as_transformer_lens(model):
    """A GPT-2 with zero MLP weights and biases (so attention-only) in TransformerLens names."""
    c = model.config
    D, H = c.n_embd, c.n_head
    E = D // H
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {"embed.W_E": sd["transformer.wte.weight"],
           "pos_embed.W_pos": sd["transformer.wpe.weight"],
           "ln_final.w": sd["transformer.ln_f.weight"], "ln_final.b": sd["transformer.ln_f.bias"],
           "unembed.W_U": sd["transformer.wte.weight"].T,
           "unembed.b_U": np.zeros(c.vocab_size, np.float32)}
    for l in range(c.n_layer):
        p, b = f"transformer.h.{l}.", f"blocks.{l}."
        w, bias = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]
        for i, name in enumerate("QKV"):
            out[b + f"attn.W_{name}"] = w[:, i * D:(i + 1) * D].reshape(D, H, E).transpose(1, 0, 2)
            out[b + f"attn.b_{name}"] = bias[i * D:(i + 1) * D].reshape(H, E)
        out[b + "attn.W_O"] = sd[p + "attn.c_proj.weight"].reshape(H, E, D)
        out[b + "attn.b_O"] = sd[p + "attn.c_proj.bias"]
        out[b + "ln1.w"], out[b + "ln1.b"] = sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]
        out[b + "attn.IGNORE"] = np.array(-np.inf, np.float32)  # buffers, ignored
        out[b + "attn.mask"] = np.ones((c.n_positions, c.n_positions), bool)
    return out


def _attention_only_gpt2():
    model = _gpt2(n_embd=36, n_head=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".mlp." in name:
                p.zero_()
    return model


TL_CONFIG = dict(n_layers=2, d_model=36, d_head=12, n_heads=3, n_ctx=32, d_vocab=113,
                 attn_only=True, normalization_type="LN", positional_embedding_type="standard",
                 eps=1e-5)


def test_transformer_lens_names_from_attention_only_gpt2():
    model = _attention_only_gpt2()
    state = _gpt2_as_transformer_lens(model)
    network = from_transformer_lens({k: torch.as_tensor(v) for k, v in state.items()}, TL_CONFIG)
    assert network.config.d_mlp is None and network.W_in is None
    _check(network, _hf_logits(model), 113)


def test_transformer_lens_state_dict_files(tmp_path):
    model = _attention_only_gpt2()
    state = _gpt2_as_transformer_lens(model)
    # safetensors.numpy.save_file writes a non-contiguous array's memory as if it were C-ordered
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp_path / "tl.safetensors")
    torch.save({k: torch.as_tensor(v) for k, v in state.items()}, tmp_path / "tl.pt")

    class Cfg:  # an object with HookedTransformerConfig's attribute names
        pass

    cfg = Cfg()
    cfg.__dict__.update(TL_CONFIG, d_vocab=-1)  # d_vocab read from embed.W_E
    tokens = _tokens(113, 1)
    expected = _torch_losses(_hf_logits(model), tokens)
    for path in (tmp_path / "tl.safetensors", str(tmp_path / "tl.pt")):
        network = from_transformer_lens(path, cfg)
        np.testing.assert_allclose(_our_losses(network, tokens), expected, rtol=RTOL, atol=ATOL)


TL_CASES = {
    "attn_only-LN": dict(attn_only=True, normalization_type="LN"),
    "attn_only-LNPre": dict(attn_only=True, normalization_type="LNPre"),
    "attn_only-none": dict(attn_only=True, normalization_type=None),
    "attn_only-rotary": dict(attn_only=True, positional_embedding_type="rotary", rotary_dim=4),
    "mlp-gelu": dict(d_mlp=40, act_fn="gelu"),
    "mlp-parallel-rotary-relu": dict(d_mlp=40, act_fn="relu", parallel_attn_mlp=True,
                                     positional_embedding_type="rotary", rotary_dim=8,
                                     rotary_base=500),
}


@pytest.mark.parametrize("case", sorted(TL_CASES))
def test_hooked_transformer_losses_match(case):
    lens = pytest.importorskip("transformer_lens")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cfg = lens.HookedTransformerConfig(n_layers=2, d_model=24, d_head=8, n_heads=3,
                                           n_ctx=32, d_vocab=50, device="cpu",
                                           **TL_CASES[case])
        torch.manual_seed(0)
        model = _randomize(lens.HookedTransformer(cfg), scale=0.3)
    network = from_transformer_lens(model.state_dict(), cfg)
    assert from_transformer_lens(model.state_dict(), cfg.to_dict()).config == network.config
    _check(network, lambda t: model(t, return_type="logits"), 50)


# ------------------------------------------------------------------ errors


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def neox_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("neox")
    _save_hf(_neox(num_hidden_layers=1), folder)
    return folder


@pytest.fixture
def neox_copy(neox_folder, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((neox_folder / name).read_bytes())
    return tmp_path


@pytest.mark.parametrize("changes, match", [
    (dict(model_type="llama", architectures=["LlamaForCausalLM"]),
     r"model_type 'llama'.*not supported.*'gpt2'.*'gpt_neox'"),
    (dict(architectures=["GPTNeoXForSequenceClassification"]), r"architecture.*not supported"),
    (dict(num_key_value_heads=2), r"grouped-query attention.*num_key_value_heads=2"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0,
                           "partial_rotary_factor": 0.25}), r"rope_type='linear'.*not supported"),
    (dict(rotary_pct=0.5), r"conflicting values.*partial_rotary_factor"),
    (dict(hidden_act="silu"), r"hidden_act='silu' is not supported"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                           "partial_rotary_factor": 0.1}), r"rotates 1 dims"),
])
def test_unsupported_configs_are_refused(neox_copy, changes, match):
    _edit_config(neox_copy, **changes)
    with pytest.raises(ValueError, match=match):
        from_pretrained(str(neox_copy))


@pytest.mark.parametrize("changes, match", [
    (dict(scale_attn_by_inverse_layer_idx=True), r"scale_attn_by_inverse_layer_idx=True"),
    (dict(scale_attn_weights=False), r"scale_attn_weights=False"),
    (dict(add_cross_attention=True), r"add_cross_attention=True"),
    (dict(activation_function="quick_gelu"), r"'quick_gelu' is not supported"),
])
def test_unsupported_gpt2_configs_are_refused(tmp_path, changes, match):
    _save_hf(_gpt2(n_layer=1), tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        from_pretrained(str(tmp_path))


def test_missing_misshapen_and_unexpected_weights(neox_copy):
    path = neox_copy / "model.safetensors"
    weights = load_file(path)
    key = "gpt_neox.layers.0.attention.query_key_value.weight"
    save_file({k: v for k, v in weights.items() if k != key}, path)
    with pytest.raises(ValueError, match=rf"{key}.*missing.*shape \[192, 64\]"):
        from_pretrained(str(neox_copy))
    save_file({**weights, key: weights[key][:-3]}, path)
    with pytest.raises(ValueError, match=rf"{key}.*shape \[189, 64\], expected \[192, 64\]"):
        from_pretrained(str(neox_copy))
    save_file({**weights, "gpt_neox.layers.0.adapter.weight": np.ones(3, np.float32)}, path)
    with pytest.raises(ValueError, match=r"does not use: 'gpt_neox.layers.0.adapter.weight'"):
        from_pretrained(str(neox_copy))
    save_file({k: v for k, v in weights.items() if k != "embed_out.weight"}, path)
    with pytest.raises(ValueError, match=r"'embed_out.weight' \(the untied LM head\) is missing"):
        from_pretrained(str(neox_copy))


def test_no_weights_or_config(tmp_path, neox_folder):
    with pytest.raises(ValueError, match="has no config.json"):
        from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_bytes((neox_folder / "config.json").read_bytes())
    with pytest.raises(ValueError, match="has no model.safetensors"):
        from_pretrained(str(tmp_path))


def test_revision_with_local_folder(neox_folder):
    with pytest.raises(ValueError, match=r"revision='step1000'.*local folder"):
        from_pretrained(str(neox_folder), revision="step1000")


def test_missing_folder_is_not_taken_for_a_repo_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        from_pretrained(str(tmp_path / "nope"))


def test_offline_repo_id_names_repo_and_local_folder(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("from_pretrained tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(OSError, match=r"'EleutherAI/pythia-14m'.*HF_HUB_OFFLINE.*local folder"):
        from_pretrained("EleutherAI/pythia-14m")
    with pytest.raises(OSError, match=r"'EleutherAI/pythia-14m' at revision 'step1000'"):
        from_pretrained("EleutherAI/pythia-14m", revision="step1000")


def test_repo_id_downloads_config_first_then_weights(monkeypatch, neox_copy):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, list(allow_patterns)))
        return str(neox_copy)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    network, tokenizer = from_pretrained("EleutherAI/pythia-14m", revision="step1000")
    assert network.config.n_layers == 1 and tokenizer is None
    assert [c[:2] for c in calls] == [("EleutherAI/pythia-14m", "step1000")] * 2
    assert calls[0][2] == ["config.json"] and "*.safetensors" in calls[1][2]
    assert not any(".bin" in pattern for pattern in calls[1][2])

    calls.clear()
    _edit_config(neox_copy, model_type="llama")
    with pytest.raises(ValueError, match="model_type 'llama'"):
        from_pretrained("EleutherAI/pythia-14m")
    assert len(calls) == 1  # refused before the weights were asked for


@pytest.mark.parametrize("changes, match", [
    (dict(n_key_value_heads=1), r"n_key_value_heads=1.*grouped-query"),
    (dict(normalization_type="RMS"), r"normalization_type='RMS' is not supported"),
    (dict(positional_embedding_type="alibi"), r"positional_embedding_type='alibi'"),
    (dict(attn_scale=2.0), r"attn_scale=2.0 is not supported"),
    (dict(attn_only=False, d_mlp=8, act_fn="solu_ln"), r"act_fn='solu_ln' is not supported"),
    (dict(gated_mlp=True), r"gated_mlp=True \(gated MLPs\) is not supported"),
    (dict(scale_attn_by_inverse_layer_idx=True), r"scale_attn_by_inverse_layer_idx=True"),
    (dict(attn_only=False, d_mlp=8, act_fn="gelu"), r"blocks.0.ln2.w.*missing.*\[36\]"),
    (dict(positional_embedding_type="rotary", rotary_dim=4),
     r"does not use: 'pos_embed.W_pos'"),
])
def test_transformer_lens_errors(changes, match):
    state = _gpt2_as_transformer_lens(_gpt2(n_embd=36, n_head=3, n_layer=1))
    config = {**TL_CONFIG, "n_layers": 1, **changes}
    with pytest.raises(ValueError, match=match):
        from_transformer_lens(state, config)

