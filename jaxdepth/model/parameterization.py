"""Parameterisations for hyperparameter transfer across width and depth: `sp`, `mup`,
`completep` (`model.parameterization`).

Multipliers `m_W = width / base_width`, `m_L = depth / base_depth`, Adam(W), rules as in
EleutherAI/nanoGPT-mup (master = muP, branch `completep` = CompleteP), one function per row
of its table (docs/literature.md §8; `sp` is the identity everywhere):

| row | sp | mup (Yang et al. 2022, arXiv 2203.03466) | completep (Dey et al. 2025, arXiv 2505.01618) |
|---|---|---|---|
| embedding init var / LR | s^2 / eta | s^2 / eta, input multiplier | same |
| hidden weight init var | s^2 | s^2 / m_W | s^2 / m_W |
| hidden weight LR | eta | eta / m_W | eta / m_W * m_L^(alpha - 1) |
| hidden weight decay | lambda | lambda | lambda * m_W |
| hidden norm gains, biases, gates: LR | eta | eta | eta * m_L^(alpha - 1) |
| final norm LR | eta | eta | eta |
| residual branch | x + F(x) | x + F(x) | x + m_L^(-alpha) F(x) |
| output logits | h W_U | h W_U * output_mult / m_W | same |
| attention logits | q.k / sqrt(d_head) | q.k / d_head | same |
| Adam epsilon | eps | eps / m_W | hidden eps / m_W * m_L^(-alpha), embedding/unembedding eps / m_W |

`completep` with `depth_alpha = 0.5` is depth-muP (Yang et al. 2023, arXiv 2310.02244).
m_W of a hidden matrix is its fan-in over the same matrix's fan-in at the base width
(microsoft/mup's `infshape`): W / W_base for the attention projections and the FFN's input
projections, F / F_base for the FFN's output projection, whose fan-in is the FFN hidden
size F (`ffn_hidden_size`: 8/3 W rounded up to a multiple of 64, so not W's multiple).
"Hidden" tensors are those inside the layer stack (params under `layers`); the embedding,
an untied unembedding (`head`, which the output multiplier treats like the embedding), the
final and embedding norms are outside it. Pure functions of the model config: the block,
the attention, the transformer and the optimiser read their coefficient here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

ADAM_EPS = 1e-8  # optax.adamw's default, the eps every rule scales

# The tensor roles the rules distinguish (`tensor_role`); FFN_OUT is a hidden matrix whose
# fan-in is the FFN hidden size.
EMBEDDING, UNEMBEDDING, HIDDEN_MATRIX, FFN_OUT, HIDDEN_VECTOR, OUTER_VECTOR = (
    "embedding", "unembedding", "hidden_matrix", "ffn_out", "hidden_vector", "outer_vector")
ROLES = (EMBEDDING, UNEMBEDDING, HIDDEN_MATRIX, FFN_OUT, HIDDEN_VECTOR, OUTER_VECTOR)


def width_mult(cfg) -> float:
    """m_W = width / base_width."""
    return cfg.width / cfg.base_width


def ffn_width_mult(cfg) -> float:
    """m_W of the FFN output projection: F / F_base, its fan-in at this width over the base
    width's (an explicit `model.ffn_hidden` is the same at both: 1)."""
    return cfg.ffn_hidden_size / dataclasses.replace(cfg, width=cfg.base_width).ffn_hidden_size


def depth_mult(cfg) -> float:
    """m_L = depth / base_depth."""
    return cfg.depth / cfg.base_depth


def _mu(cfg) -> bool:
    return cfg.parameterization != "sp"


def _alpha(cfg) -> float | None:
    """The depth exponent alpha under completep, None where depth is not parameterised."""
    return cfg.depth_alpha if cfg.parameterization == "completep" else None


def hidden_init_scale(cfg, ffn_out: bool = False) -> float:
    """Std multiplier of hidden weights: init var s^2 / m_W (muP table, hidden weight init);
    `ffn_out`: the FFN output projection's (m_W = F / F_base)."""
    if not _mu(cfg):
        return 1.0
    return 1.0 / math.sqrt(ffn_width_mult(cfg) if ffn_out else width_mult(cfg))


def branch_multiplier(cfg) -> float:
    """Residual branch x + m_L^(-alpha) F(x) (CompleteP, arXiv 2505.01618 eq. 1; depth-muP,
    arXiv 2310.02244, alpha = 1/2); 1 under sp and mup."""
    a = _alpha(cfg)
    return 1.0 if a is None else depth_mult(cfg) ** -a


def attention_scale(cfg) -> float:
    """Attention logits q.k / d_head under muP (arXiv 2203.03466 §4, "1/d attention"),
    q.k / sqrt(d_head) under sp (Vaswani et al. 2017)."""
    d = cfg.head_dim
    return 1.0 / d if _mu(cfg) else 1.0 / math.sqrt(d)


def input_multiplier(cfg) -> float:
    """Multiplier on the embedding output (muP table: an optional input multiplier)."""
    return cfg.input_mult if _mu(cfg) else 1.0


def output_multiplier(cfg) -> float:
    """Logits h W_U * output_mult / m_W (muP table, output logits)."""
    return cfg.output_mult / width_mult(cfg) if _mu(cfg) else 1.0


def tensor_role(names: list[str]) -> str:
    """The role of a parameter from its path in the param tree (`["layers", "attn",
    "query", "kernel"]`): inside the layer stack (`layers`, or `layers_<l>` unrolled) a
    matrix (`kernel`) is hidden_matrix and anything else (norm scales and biases, scheme
    gates) hidden_vector; outside, `embed` / `head` are the (un)embedding and the rest
    (final and embedding norms) outer_vector."""
    top = names[0]
    if top == "layers" or top.startswith("layers_"):
        if names[-1] != "kernel":
            return HIDDEN_VECTOR
        return FFN_OUT if names[-3:-1] == ["ffn", "down"] else HIDDEN_MATRIX
    if top in ("embed", "pos_embed"):
        return EMBEDDING
    if top == "head":
        return UNEMBEDDING
    return OUTER_VECTOR


@dataclass(frozen=True)
class TensorRule:
    """Multipliers of one tensor role on the base learning rate, the AdamW weight decay
    (coupled: the decay applied is lr * lr_mult * wd * wd_mult) and Adam's epsilon."""

    lr: float = 1.0
    wd: float = 1.0
    eps: float = 1.0


def tensor_rules(cfg) -> dict[str, TensorRule]:
    """Per-role multipliers, one table row each (module docstring); all 1 under sp."""
    if not _mu(cfg):
        return {r: TensorRule() for r in ROLES}
    mw = width_mult(cfg)
    a = _alpha(cfg)
    # hidden LR m_L^(alpha - 1), hidden eps m_L^(-alpha), hidden wd m_W: CompleteP rows only
    # (wd m_W keeps the coupled decay lr * wd of a hidden matrix independent of width)
    depth_lr = 1.0 if a is None else depth_mult(cfg) ** (a - 1.0)
    depth_eps = 1.0 if a is None else depth_mult(cfg) ** -a
    outer = TensorRule(lr=1.0, wd=1.0, eps=1.0 / mw)  # embedding / unembedding / final norm

    def hidden_matrix(m):  # m: the matrix's own width multiplier (its fan-in's)
        return TensorRule(lr=depth_lr / m, wd=m if a is not None else 1.0, eps=depth_eps / m)

    return {
        EMBEDDING: outer,
        UNEMBEDDING: outer,
        OUTER_VECTOR: outer,
        HIDDEN_MATRIX: hidden_matrix(mw),
        FFN_OUT: hidden_matrix(ffn_width_mult(cfg)),
        HIDDEN_VECTOR: TensorRule(lr=depth_lr, eps=depth_eps / mw),  # never decayed
    }
