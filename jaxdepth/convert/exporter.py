"""`export_run(RUN_DIR, OUT)`: a jaxdepth run becomes a Hugging Face model directory
(`config.json`, safetensors shards, tokenizer) that `transformers` loads and
lm-evaluation-harness evaluates (`--model hf --model_args pretrained=OUT`).

Only what the stock architecture computes exports: the Pre-LN scheme under the standard
parameterisation, with the norm / FFN / positions / biases of one family
(`families.FAMILIES`: llama, qwen2, gpt2). Anything else is refused with the reason, before
any weight is read. A byte-tokenizer run exports a byte-level BPE tokenizer.json with no
merges, which gives the same ids (byte b -> id b, EOS 256, PAD 257).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxdepth.config import ModelConfig
from jaxdepth.convert.families import FAMILIES, Family, family_of_model
from jaxdepth.errors import UserError

SHARD_BYTES = 2 << 30  # safetensors shards of at most 2 GiB, written one at a time

# why each scheme other than pre is not a stock Pre-LN transformer
_SCHEME_WHY = {
    "lns": "scales each layer's normalised input by 1/sqrt(l+1) (LayerNorm Scaling)",
    "post": "normalises after the residual add (Post-LN)",
    "deepnorm": "is Post-LN with an up-weighted residual",
    "mix": "runs its first layers Post-LN (Mix-LN)",
    "sandwich": "normalises each sublayer's output too",
    "peri": "normalises each sublayer's output and the embeddings",
    "rezero": "gates each sublayer by a learned scalar and has no norm",
    "layerscale": "gates each sublayer by a learned per-channel scale",
    "depth_mup": "scales each residual branch by 1/sqrt(L)",
    "none": "has no residual connection and no norm",
    "no_residual": "has no residual connection",
    "no_norm": "has no norm",
}


def check_exportable(mcfg: ModelConfig) -> Family:
    """The family `mcfg` exports as; a one-line UserError saying why it cannot."""
    if mcfg.scheme != "pre":
        why = _SCHEME_WHY.get(mcfg.scheme, "is not the Pre-LN scheme")
        if mcfg.scheme.startswith("lns+"):
            why = "adds LayerNorm Scaling to another scheme"
        raise UserError(f"scheme '{mcfg.scheme}' {why}, which stock Llama / Qwen2 / GPT-2 "
                        "cannot represent; only scheme 'pre' exports")
    if mcfg.parameterization != "sp":
        raise UserError(f"parameterization '{mcfg.parameterization}' multiplies the logits, "
                        "attention and residual branches by shape-dependent constants that "
                        "stock Hugging Face models lack; only 'sp' exports")
    if mcfg.dwa or mcfg.mod_capacity < 1:
        what = "DenseFormer's depth-weighted averages" if mcfg.dwa else "Mixture-of-Depths routing"
        raise UserError(f"the model uses {what} (model.dwa / model.mod_capacity), which stock "
                        "Llama / Qwen2 / GPT-2 cannot represent; only a plain residual stack exports")
    fam = family_of_model(mcfg)
    if fam is None:
        have = ", ".join(f"{k}={getattr(mcfg, k)}" for k in FAMILIES["llama"].fixed)
        raise UserError(f"the model's {have} match no exportable family (llama: rmsnorm, "
                        "swiglu, rope, no biases; qwen2: llama + qkv_bias; gpt2: layernorm, "
                        "gelu, learned positions, all biases)")
    return fam


def hf_tensors(params, mcfg: ModelConfig, fam: Family):
    """(HF name, numpy array) of every tensor, one at a time, from a nested param dict."""

    def get(path, i):
        node = params
        for k in path:
            node = node[k]
        return np.asarray(node if i is None else node[i])

    for rule in fam.rules(mcfg):
        for i in range(mcfg.depth) if rule.per_layer else (None,):
            parts = [get(p, i) for p in rule.params]
            yield fam.hf_names(rule, i)[0], np.ascontiguousarray(rule.to_hf(parts, mcfg))


def byte_tokenizer_json() -> str:
    """jaxdepth's byte tokenizer as a HF tokenizer.json: byte-level pre-tokenisation, a BPE
    whose vocabulary is the 256 byte symbols in byte order and no merges, then <|eos|> = 256
    and <|pad|> = 257 (`jaxdepth.data.tokenizers.ByteTokenizer`)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from jaxdepth.data.tokenizers import EOS, PAD, bytes_to_unicode

    alphabet = bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken(PAD, special=True)])
    return tok.to_str()


def _tokenizer_files(run_dir: Path, tok, seq_len: int) -> dict[str, str]:
    from tokenizers import Tokenizer

    raw = run_dir / "tokenizer.json"
    if raw.is_file():
        text = raw.read_text(encoding="utf-8")
    elif tok.kind == "byte":
        text = byte_tokenizer_json()
    else:
        raise UserError(f"'{run_dir}' has no tokenizer.json to export with the model")
    hf = Tokenizer.from_str(text)
    name = lambda i: None if i is None or i < 0 else hf.id_to_token(i)  # noqa: E731
    # an imported run's own tokenizer_config.json (its chat template, ...) carries over
    own = run_dir / "tokenizer_config.json"
    config = json.loads(own.read_text(encoding="utf-8")) if own.is_file() else {}
    config |= {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": seq_len,
               "eos_token": name(tok.eos_id), "bos_token": name(tok.bos_id),
               "pad_token": name(tok.pad_id), "add_bos_token": tok.bos_id is not None}
    return {"tokenizer.json": text,
            "tokenizer_config.json": json.dumps({k: v for k, v in config.items()
                                                 if v is not None}, indent=1)}


def run_tokenizer(dcfg, run_dir: Path):
    """The tokenizer a run trained with, from its own files (no corpus is read): bytes; the
    BPE it trained (its tokenizer.json, specials <|eos|> / <|pad|>); or the pretrained one,
    from where the config names it (its EOS / BOS files beside it), else the run's copy."""
    from tokenizers import Tokenizer

    from jaxdepth.data import tokenizers as T

    kind, arg = T.parse_spec(dcfg.tokenizer, dcfg.bpe_vocab_size)
    saved = run_dir / "tokenizer.json"
    if kind == "byte":
        return T.ByteTokenizer()
    if kind == "bpe":
        if not saved.is_file():
            raise UserError(f"'{run_dir}' trained a BPE tokenizer but has no tokenizer.json")
        return T.trained_bpe(Tokenizer.from_file(str(saved)), f"bpe:{arg}")
    return T.load_tokenizer(arg if Path(arg).expanduser().exists() else str(saved))


def export_run(run_dir, out, *, step: int | None = None, dtype: str | None = None,
               progress: bool = True) -> dict:
    """Write the HF directory `out` for the run's checkpoint at `step` (default: newest).
    `dtype` (float32 / bfloat16): the tensors' storage type (default: the params')."""
    import jax
    import ml_dtypes
    from safetensors.numpy import save_file
    from tqdm.auto import tqdm

    from jaxdepth.config import RunConfig, from_dict
    from jaxdepth.diagnostics.run_analysis import checked_config, restore_model

    run_dir = Path(run_dir).expanduser().resolve()
    _, cfg_dict = checked_config(run_dir, step)
    saved = from_dict(RunConfig, cfg_dict)
    fam = check_exportable(saved.model)  # before a weight is read
    tok = run_tokenizer(saved.data, run_dir)
    cfg, mcfg, params, s = restore_model(run_dir, step)
    params = jax.device_get(params)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype or mcfg.param_dtype
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    shards, current, size = [], {}, 0  # shards: the tensor names of each written shard

    def flush():
        save_file(current, str(out / f"part-{len(shards) + 1:05d}.safetensors"),
                  metadata={"format": "pt"})
        shards.append(list(current))
        current.clear()

    total = sum(mcfg.depth if r.per_layer else 1 for r in fam.rules(mcfg))
    for name, arr in tqdm(hf_tensors(params, mcfg, fam), total=total, desc="export",
                          unit="tensor", disable=not progress, dynamic_ncols=True, leave=False):
        if current and size + arr.nbytes > SHARD_BYTES:
            flush()
            size = 0
        current[name] = arr.astype(np_dtype)
        size += current[name].nbytes
    flush()
    weight_map = _name_shards(out, shards)
    hf = fam.hf_config(mcfg, fam.export_as) | {
        "torch_dtype": dtype, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
        "max_position_embeddings": mcfg.max_positions or cfg.data.seq_len}
    (out / "config.json").write_text(json.dumps(hf, indent=1))
    for name, text in _tokenizer_files(run_dir, tok, cfg.data.seq_len).items():
        (out / name).write_text(text)
    return {"out": str(out), "family": fam.name, "architecture": fam.export_as, "step": s,
            "tensors": len(weight_map), "dtype": dtype}


def _name_shards(out: Path, shards: list[list[str]]) -> dict:
    """Rename the written parts as transformers names them: one `model.safetensors`, or
    `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`."""
    n = len(shards)
    weight_map = {}
    for i, names in enumerate(shards, 1):
        final = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
        (out / f"part-{i:05d}.safetensors").replace(out / final)
        weight_map.update(dict.fromkeys(names, final))
    if n > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return weight_map
