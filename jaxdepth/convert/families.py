"""The Hugging Face architectures jaxdepth reads and writes, each as a table between HF tensor
names and the scanned model's parameters, usable in both directions (import and export).

A family maps a HF `config.json` to `ModelConfig` keys (what the architecture needs becomes a
config option of the one model: grouped-query attention, q/k/v biases, learned positions,
LayerNorm with bias) and back, and lists its tensors as `Rule`s: one HF tensor <-> one or
more jaxdepth parameters (GPT-2 fuses q, k, v into one `c_attn`). Per-layer rules address
row `i` of the parameters stacked on the scanned layer axis.

- llama (Touvron et al. 2023, arXiv 2302.13971; also Mistral, arXiv 2310.06825, and SmolLM):
  Pre-RMSNorm, SwiGLU, RoPE (rotate-half, as `jaxdepth.model.attention.rope`), GQA.
- qwen2 (arXiv 2407.10671): llama with biases on the q, k, v projections.
- gpt2 (Radford et al. 2019): Pre-LayerNorm with bias, learned positions, GELU (tanh),
  biases everywhere, `Conv1D` weights stored (in, out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jaxdepth.config import ModelConfig
from jaxdepth.errors import UserError

Path_ = tuple[str, ...]  # a parameter's path in the param tree


@dataclass(frozen=True)
class Rule:
    """HF tensor `hf` (`{i}` = layer index) <-> jaxdepth parameters `params`.
    `to_jax(w, cfg)` splits the HF tensor into one array per parameter; `to_hf(arrays, cfg)`
    joins them back. `per_layer`: the parameters are stacked on the layer axis."""

    hf: str
    params: tuple[Path_, ...]
    to_jax: Callable
    to_hf: Callable
    per_layer: bool = True

    def hf_name(self, i: int | None) -> str:
        return self.hf.format(i=i)


def _same(w, cfg):
    return (w,)


def _same_back(a, cfg):
    return a[0]


def _t(w, cfg):
    return (w.T,)


def _t_back(a, cfg):
    return a[0].T


def _heads(n_of):
    """nn.Linear (n*H, W) weight <-> DenseGeneral kernel (W, n, H)."""
    return (lambda w, cfg: (w.T.reshape(cfg.width, n_of(cfg), cfg.head_dim),),
            lambda a, cfg: a[0].reshape(cfg.width, -1).T)


def _head_bias(n_of):
    return (lambda b, cfg: (b.reshape(n_of(cfg), cfg.head_dim),),
            lambda a, cfg: a[0].reshape(-1))


def _o_proj(w, cfg):  # nn.Linear (W, N*H) -> out kernel (N, H, W)
    return (w.T.reshape(cfg.heads, cfg.head_dim, cfg.width),)


def _o_proj_back(a, cfg):
    return a[0].reshape(-1, cfg.width).T


_Q, _KV = (lambda c: c.heads), (lambda c: c.kv_head_count)
L_ = ("layers",)


def _p(*names) -> tuple[Path_, ...]:
    return (tuple(names),)


def _llama_rules(cfg: ModelConfig) -> list[Rule]:
    pre = "model.layers.{i}."
    rules = [
        Rule(pre + "self_attn.q_proj.weight", _p(*L_, "attn", "query", "kernel"), *_heads(_Q)),
        Rule(pre + "self_attn.k_proj.weight", _p(*L_, "attn", "key", "kernel"), *_heads(_KV)),
        Rule(pre + "self_attn.v_proj.weight", _p(*L_, "attn", "value", "kernel"), *_heads(_KV)),
        Rule(pre + "self_attn.o_proj.weight", _p(*L_, "attn", "out", "kernel"), _o_proj,
             _o_proj_back),
        Rule(pre + "mlp.gate_proj.weight", _p(*L_, "ffn", "gate", "kernel"), _t, _t_back),
        Rule(pre + "mlp.up_proj.weight", _p(*L_, "ffn", "up", "kernel"), _t, _t_back),
        Rule(pre + "mlp.down_proj.weight", _p(*L_, "ffn", "down", "kernel"), _t, _t_back),
        Rule(pre + "input_layernorm.weight", _p(*L_, "attn_norm_in", "scale"), _same, _same_back),
        Rule(pre + "post_attention_layernorm.weight", _p(*L_, "ffn_norm_in", "scale"), _same,
             _same_back),
        Rule("model.embed_tokens.weight", _p("embed", "embedding"), _same, _same_back, False),
        Rule("model.norm.weight", _p("final_norm", "scale"), _same, _same_back, False),
    ]
    if cfg.qkv_bias:
        rules += [Rule(pre + f"self_attn.{x}_proj.bias", _p(*L_, "attn", name, "bias"),
                       *_head_bias(n)) for x, name, n in
                  (("q", "query", _Q), ("k", "key", _KV), ("v", "value", _KV))]
    if not cfg.tied_embeddings:
        rules.append(Rule("lm_head.weight", _p("head", "kernel"), _t, _t_back, False))
    return rules


def _c_attn(w, cfg):
    """GPT-2's fused (W, 3W) Conv1D weight (or (3W,) bias) -> q, k, v."""
    parts = np.split(w, 3, axis=-1)
    shape = (cfg.heads, cfg.head_dim)
    return tuple(p.reshape(p.shape[:-1] + shape) for p in parts)


def _c_attn_back(a, cfg):
    return np.concatenate([x.reshape(x.shape[:-2] + (-1,)) for x in a], axis=-1)


def _gpt2_rules(cfg: ModelConfig) -> list[Rule]:
    pre = "h.{i}."
    qkv = lambda leaf: tuple((*L_, "attn", n, leaf) for n in ("query", "key", "value"))  # noqa: E731
    rules = [
        Rule(pre + "attn.c_attn.weight", qkv("kernel"), _c_attn, _c_attn_back),
        Rule(pre + "attn.c_attn.bias", qkv("bias"), _c_attn, _c_attn_back),
        Rule(pre + "attn.c_proj.weight", _p(*L_, "attn", "out", "kernel"),
             lambda w, c: (w.reshape(c.heads, c.head_dim, c.width),),
             lambda a, c: a[0].reshape(-1, c.width)),
        Rule(pre + "attn.c_proj.bias", _p(*L_, "attn", "out", "bias"), _same, _same_back),
        Rule(pre + "mlp.c_fc.weight", _p(*L_, "ffn", "up", "kernel"), _same, _same_back),
        Rule(pre + "mlp.c_fc.bias", _p(*L_, "ffn", "up", "bias"), _same, _same_back),
        Rule(pre + "mlp.c_proj.weight", _p(*L_, "ffn", "down", "kernel"), _same, _same_back),
        Rule(pre + "mlp.c_proj.bias", _p(*L_, "ffn", "down", "bias"), _same, _same_back),
        Rule("wte.weight", _p("embed", "embedding"), _same, _same_back, False),
        Rule("wpe.weight", _p("pos_embed", "embedding"), _same, _same_back, False),
    ]
    for hf, ours in (("h.{i}.ln_1", (*L_, "attn_norm_in")), ("h.{i}.ln_2", (*L_, "ffn_norm_in")),
                     ("ln_f", ("final_norm",))):
        for hf_leaf, leaf in (("weight", "scale"), ("bias", "bias")):
            rules.append(Rule(f"{hf}.{hf_leaf}", ((*ours, leaf),), _same, _same_back,
                              ours[0] == "layers"))
    if not cfg.tied_embeddings:
        rules.append(Rule("lm_head.weight", _p("head", "kernel"), _t, _t_back, False))
    return rules


# ---------------------------------------------------------------- configs


def _need(hf: dict, key: str, where: str):
    if key not in hf or hf[key] is None:
        raise UserError(f"{where}: config.json has no '{key}', which a {hf.get('model_type')} "
                        "model needs; is it a complete Hugging Face config?")
    return hf[key]


def _rope(hf: dict, where: str) -> float:
    """RoPE theta from `rope_theta` (older configs) or `rope_parameters` (transformers 5);
    any scaled RoPE (llama3, yarn, linear, dynamic) is refused: this model rotates by the
    plain inverse frequencies."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kinds = {params.get("rope_type"), scaling.get("rope_type"), scaling.get("type")}
    kind = next(iter(sorted(kinds - {None, "default"})), None)
    if kind is not None:
        raise UserError(f"{where}: RoPE type '{kind}' (rope_scaling) is not supported; only "
                        "plain RoPE imports (Llama 2, Mistral, Qwen2, SmolLM; not Llama 3.1+)")
    return float(hf.get("rope_theta") or params.get("rope_theta") or 10000.0)


def _llama_config(hf: dict, where: str) -> dict:
    W, N = _need(hf, "hidden_size", where), _need(hf, "num_attention_heads", where)
    head_dim = hf.get("head_dim") or W // N
    if head_dim * N != W:
        raise UserError(f"{where}: head_dim {head_dim} x {N} heads != hidden_size {W}; only "
                        "models whose heads split the width import")
    if hf.get("mlp_bias"):
        raise UserError(f"{where}: mlp_bias=true is not supported (llama FFNs here have no bias)")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{where}: hidden_act '{hf['hidden_act']}' is not supported; llama-family "
                        "models import with silu (SwiGLU)")
    qkv_bias = hf.get("model_type") == "qwen2" or bool(hf.get("attention_bias"))
    if hf.get("model_type") == "llama" and hf.get("attention_bias"):
        raise UserError(f"{where}: llama attention_bias=true also biases o_proj, which is not "
                        "supported (Qwen2's q/k/v-only biases are)")
    return dict(depth=_need(hf, "num_hidden_layers", where), width=W, heads=N,
                kv_heads=hf.get("num_key_value_heads") or N, norm="rmsnorm",
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)), ffn="swiglu",
                ffn_hidden=_need(hf, "intermediate_size", where), rope_theta=_rope(hf, where),
                qkv_bias=qkv_bias, tied_embeddings=bool(hf.get("tie_word_embeddings", False)),
                vocab_size=_need(hf, "vocab_size", where))


def _gpt2_config(hf: dict, where: str) -> dict:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserError(f"{where}: activation_function '{act}' is not supported; GPT-2 imports "
                        "with its tanh GELU (gelu_new)")
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(key):
            raise UserError(f"{where}: {key}=true is not supported")
    if hf.get("scale_attn_weights") is False:
        raise UserError(f"{where}: scale_attn_weights=false is not supported")
    W = _need(hf, "n_embd", where)
    return dict(depth=_need(hf, "n_layer", where), width=W, heads=_need(hf, "n_head", where),
                norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
                ffn="gelu", ffn_hidden=hf.get("n_inner") or 4 * W, positions="learned",
                max_positions=_need(hf, "n_positions", where), qkv_bias=True, proj_bias=True,
                tied_embeddings=bool(hf.get("tie_word_embeddings", True)),
                vocab_size=_need(hf, "vocab_size", where))


def _llama_hf(cfg: ModelConfig, arch: str) -> dict:
    out = {"architectures": [arch], "model_type": "qwen2" if arch.startswith("Qwen2") else "llama",
           "hidden_size": cfg.width, "intermediate_size": cfg.ffn_hidden_size,
           "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
           "num_key_value_heads": cfg.kv_head_count, "head_dim": cfg.head_dim,
           "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
           "tie_word_embeddings": cfg.tied_embeddings, "vocab_size": cfg.vocab_size,
           "attention_bias": False, "mlp_bias": False, "initializer_range": cfg.init_std}
    if arch.startswith("Qwen2"):
        out.pop("attention_bias")
        out.pop("mlp_bias")
        out["use_sliding_window"] = False
    return out


def _gpt2_hf(cfg: ModelConfig, arch: str) -> dict:
    return {"architectures": [arch], "model_type": "gpt2", "n_embd": cfg.width,
            "n_layer": cfg.depth, "n_head": cfg.heads, "n_inner": cfg.ffn_hidden_size,
            "n_positions": cfg.max_positions, "activation_function": "gelu_new",
            "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tied_embeddings,
            "vocab_size": cfg.vocab_size, "initializer_range": cfg.init_std}


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]  # HF `architectures` names read as this family
    export_as: str  # the architecture written on export
    model_config: Callable[[dict, str], dict]  # HF config -> ModelConfig keys
    hf_config: Callable[[ModelConfig, str], dict]  # ModelConfig -> HF config
    rules: Callable[[ModelConfig], list[Rule]]
    # the ModelConfig values the family fixes: a run exports as it only if it has them
    fixed: dict
    prefix: str = ""  # of the body's tensor names in the HF model's state dict

    def hf_names(self, rule: Rule, i: int | None) -> tuple[str, ...]:
        """The names `rule` may have in a checkpoint: with the prefix (as the HF model saves
        them; written first on export) and without (as original GPT-2 checkpoints do)."""
        name = rule.hf_name(i)
        if not self.prefix or name.startswith("lm_head"):
            return (name,)
        return (self.prefix + name, name)


FAMILIES = {
    "llama": Family("llama", ("LlamaForCausalLM", "MistralForCausalLM"), "LlamaForCausalLM",
                    _llama_config, _llama_hf, _llama_rules,
                    dict(norm="rmsnorm", ffn="swiglu", positions="rope", qkv_bias=False,
                         proj_bias=False)),
    "qwen2": Family("qwen2", ("Qwen2ForCausalLM",), "Qwen2ForCausalLM", _llama_config,
                    _llama_hf, _llama_rules,
                    dict(norm="rmsnorm", ffn="swiglu", positions="rope", qkv_bias=True,
                         proj_bias=False)),
    "gpt2": Family("gpt2", ("GPT2LMHeadModel", "GPT2Model"), "GPT2LMHeadModel", _gpt2_config,
                   _gpt2_hf, _gpt2_rules,
                   dict(norm="layernorm", ffn="gelu", positions="learned", qkv_bias=True,
                        proj_bias=True), prefix="transformer."),
}
SUPPORTED = ", ".join(a for f in FAMILIES.values() for a in f.architectures)


def family_of_hf(hf: dict, where: str) -> Family:
    """The family of a HF config (by `architectures`, else `model_type`); UserError else."""
    archs = hf.get("architectures") or []
    for fam in FAMILIES.values():
        if any(a in fam.architectures for a in archs) or (
                not archs and hf.get("model_type") in (fam.name, "mistral" if
                                                       fam.name == "llama" else None)):
            return fam
    what = f"architecture {archs}" if archs else f"model_type '{hf.get('model_type')}'"
    raise UserError(f"{where}: {what} is not supported; supported: {SUPPORTED}")


def family_of_model(cfg: ModelConfig) -> Family | None:
    """The family whose fixed choices `cfg` has, or None."""
    for fam in FAMILIES.values():
        if all(getattr(cfg, k) == v for k, v in fam.fixed.items()):
            return fam
    return None
