"""`jaxdepth import` / `export` against the reference implementation: tiny random
`transformers` models of each family (Llama with GQA, sharded; Qwen2 with q/k/v biases, tied;
GPT-2 with learned positions, LayerNorm biases, Conv1D weights) import with logits and every
hidden state within 1e-4 (float32); a jaxdepth run exports to a directory `transformers`
loads with the same logits and tokenizer ids, and imports back bit for bit; bad input is a
one-line error before any weight is read (no run directory is made)."""

from __future__ import annotations

import functools
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.cli import main
from jaxdepth.convert.exporter import check_exportable
from jaxdepth.convert.importer import import_model
from jaxdepth.diagnostics.run_analysis import restore_model
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer
from tests.conftest import tiny_model, tiny_run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAMILIES = ("llama", "qwen2", "gpt2")
TEXT = "def add(a, b):\n    return a + b  # the quick brown fox, 42\n"


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT * 5, "hello world, the quick brown fox"] * 10,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    return tok


def _hf_model(family: str, vocab: int):
    T = transformers
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0)
    if family == "llama":  # grouped-query attention, untied head, non-default theta
        cfg = T.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, rope_theta=5000.0,
                            tie_word_embeddings=False, **common)
        return T.LlamaForCausalLM(cfg)
    if family == "qwen2":  # q/k/v biases, tied embeddings
        cfg = T.Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2,
                            tie_word_embeddings=True, **common)
        return T.Qwen2ForCausalLM(cfg)
    cfg = T.GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=64, **common)
    return T.GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{family: (directory, token ids (2, 16), reference logits, reference hidden states)}."""
    root = tmp_path_factory.mktemp("hf")
    tok = _tokenizer()
    vocab = tok.get_vocab_size()
    ids = np.random.default_rng(0).integers(0, vocab, (2, 16))
    out = {}
    torch.manual_seed(0)
    for family in FAMILIES:
        m = _hf_model(family, vocab).eval()
        with torch.no_grad():  # norms and biases away from their 1 / 0 initial values
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
            o = m(torch.tensor(ids), output_hidden_states=True)
        d = root / family
        # llama in several shards with an index, the others in one file
        m.save_pretrained(d, max_shard_size="100KB" if family == "llama" else "1GB")
        tok.save(str(d / "tokenizer.json"))
        out[family] = (d, ids, o.logits.numpy(), [h.numpy() for h in o.hidden_states])
    assert (out["llama"][0] / "model.safetensors.index.json").is_file()
    return out


@functools.partial(jax.jit, static_argnames="mcfg")
def _forward(params, mcfg, ids):
    logits, aux = Transformer(mcfg, return_hidden=True).apply({"params": params}, ids)
    return logits, aux["hidden"]


@pytest.mark.parametrize("family", FAMILIES)
def test_import_matches_transformers(hf_dirs, tmp_path, family):
    src, ids, want_logits, want_hidden = hf_dirs[family]
    st = import_model(src, tmp_path / "run", progress=False)
    assert st["family"] == family and st["status"] == "imported"
    _, mcfg, params, step = restore_model(tmp_path / "run")
    assert step == 0 and mcfg.scheme == "pre"
    logits, hidden = _forward(params, mcfg, jnp.asarray(ids))
    chex.assert_shape(hidden, (mcfg.depth + 1, *ids.shape, mcfg.width))
    np.testing.assert_allclose(logits, want_logits, atol=1e-4, rtol=0)
    # transformers' hidden states: the embeddings, then each layer's output; its last one is
    # after the final norm, which jaxdepth applies in `unembed`
    for layer in range(mcfg.depth):
        np.testing.assert_allclose(hidden[layer], want_hidden[layer], atol=1e-4, rtol=0,
                                   err_msg=f"{family} hidden state {layer}")
    normed = Transformer(mcfg).apply({"params": params}, hidden[-1],
                                     method=lambda m, h: m.final_norm(h))
    np.testing.assert_allclose(normed, want_hidden[-1], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny Pre-LN jaxdepth run (byte tokenizer, GQA) trained a few steps."""
    from jaxdepth.train.loop import train

    d = tmp_path_factory.mktemp("trained") / "run"
    cfg = tiny_run(model=dict(depth=2, width=32, heads=4, kv_heads=2),
                   train=dict(steps=3, eval_every=0, ckpt_every=3))
    assert train(cfg, d, progress=False)["status"] == "done"
    return d


def test_export_loads_in_transformers_and_imports_back(trained_run, tmp_path, capsys):
    hf_dir, back = tmp_path / "hf", tmp_path / "back"
    assert main(["export", str(trained_run), "--out", str(hf_dir), "--no-progress"]) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    _, mcfg, params, _ = restore_model(trained_run)
    ids = np.random.default_rng(1).integers(0, 258, (2, 12))
    logits, _ = _forward(params, mcfg, jnp.asarray(ids))
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert model.config.num_key_value_heads == 2
    with torch.no_grad():
        theirs = model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(logits, theirs, atol=1e-4, rtol=0)
    # the byte tokenizer exports as a tokenizer.json giving the same ids
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    text = "naïve café 🚀\n\tx = 1"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == list(text.encode())
    assert hf_tok.eos_token_id == 256
    # import(export(run)) is the run's params, bit for bit
    import_model(hf_dir, back, progress=False)
    _, mcfg_back, params_back, _ = restore_model(back)
    assert (mcfg_back.depth, mcfg_back.width, mcfg_back.kv_heads) == (2, 32, 2)
    chex.assert_trees_all_equal(jax.device_get(params_back), jax.device_get(params))


@pytest.mark.parametrize("kw, why", [
    (dict(scheme="lns"), "LayerNorm Scaling"), (dict(scheme="post"), "Post-LN"),
    (dict(scheme="lns+sandwich"), "only scheme 'pre' exports"),
    (dict(parameterization="mup"), "only 'sp' exports"),
    (dict(dwa=True), "DenseFormer"), (dict(mod_capacity=0.5), "Mixture-of-Depths"),
    (dict(norm="layernorm"), "match no exportable family")])
def test_export_refuses_what_stock_models_cannot_represent(kw, why):
    with pytest.raises(UserError, match=why):
        check_exportable(tiny_model(**kw))
    assert check_exportable(tiny_model()).name == "llama"
    assert check_exportable(tiny_model(qkv_bias=True)).name == "qwen2"


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_line_before_any_weight(hf_dirs, tmp_path, capsys):
    out = tmp_path / "out"

    def variant(name, family="llama"):
        d = tmp_path / name
        shutil.copytree(hf_dirs[family][0], d)
        return d

    def error(src):
        err = _error(capsys, ["import", str(src), "--out", str(out), "--no-progress"])
        assert not out.exists()  # refused before the run directory is made
        return err

    d = variant("bert")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"architectures": ["BertForMaskedLM"],
                                                     "model_type": "bert"}))
    assert "not supported; supported: LlamaForCausalLM" in error(d)
    d = variant("no_shard")
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    shard.unlink()
    assert "missing 1 of its" in error(d) and shard.name in error(d)
    d = variant("mismatch")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    name = next(iter(index["weight_map"]))
    others = sorted(set(index["weight_map"].values()) - {index["weight_map"][name]})
    index["weight_map"][name] = others[0]
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "does not match its shards" in error(d)
    d = variant("no_tokenizer", "qwen2")
    (d / "tokenizer.json").unlink()
    assert "no tokenizer.json" in error(d)
    d = variant("wrong_shape", "qwen2")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"intermediate_size": 128}))
    assert "does not fit" in error(d)
    d = variant("scaled_rope", "qwen2")
    (d / "config.json").write_text(json.dumps(cfg | {"rope_scaling": {"rope_type": "llama3"}}))
    assert "RoPE type 'llama3'" in error(d)
    d = variant("pickle", "gpt2")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    assert "PyTorch pickles are not read" in error(d)
    assert "does not exist" in error(tmp_path / "nowhere")
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file")
    error(tmp_path / "x.gguf")
    import_model(hf_dirs["gpt2"][0], out, progress=False)
    assert "already holds a run" in _error(capsys, ["import", str(hf_dirs["gpt2"][0]),
                                                    "--out", str(out)])
    from jaxdepth.config import RunConfig, from_dict
    from jaxdepth.rundir import read_config
    from jaxdepth.train.loop import train

    with pytest.raises(UserError, match="imported model .* train.init_from="):
        train(from_dict(RunConfig, read_config(out)), out, progress=False)
    err = _error(capsys, ["analyze", str(out), "model.depth=2", "--no-progress"])
    assert "only data.* keys" in err
    assert "does not exist" in _error(capsys, ["analyze", str(out), "data.source=/no/such"])
