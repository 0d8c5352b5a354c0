"""optax: AdamW with warmup + cosine, clipping, a weight-decay mask, layer-wise learning
rates and freezing over the stacked layer axis; under muP/CompleteP, one AdamW per tensor
role with its learning-rate, weight-decay and epsilon multipliers
(`jaxdepth.model.parameterization`), chosen by optax parameter labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxdepth.model import parameterization as P


def lr_schedule(tcfg) -> optax.Schedule:
    """Linear warmup to `lr`, cosine decay to `min_lr_ratio * lr` at `steps`
    (Loshchilov & Hutter 2017, arXiv 1608.03983)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=tcfg.lr, warmup_steps=tcfg.warmup_steps,
        decay_steps=max(tcfg.steps, tcfg.warmup_steps + 1), end_value=tcfg.lr * tcfg.min_lr_ratio)


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decay_mask(params):
    """Weight decay on matrices (kernels, embeddings) only, never on norm scales, biases
    or gates (Loshchilov & Hutter 2019, arXiv 1711.05101, as in GPT-style training)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: _path_names(p)[-1] in ("kernel", "embedding"), params)


def layer_multipliers(mcfg, tcfg) -> jnp.ndarray:
    """Per-layer update multiplier, shape (depth,): layer-wise lr decay
    `decay^(depth - 1 - l)` (Clark et al. 2020, arXiv 2003.10555, ELECTRA's layer-wise
    lr), times 0 for frozen layers when only the last `train_last_layers` train."""
    L = mcfg.depth
    l = jnp.arange(L)
    mult = tcfg.layer_lr_decay ** (L - 1 - l).astype(jnp.float32)
    if tcfg.train_last_layers:
        mult = jnp.where(l >= L - tcfg.train_last_layers, mult, 0.0)
    return mult


def scale_by_layer(mcfg, tcfg) -> optax.GradientTransformation:
    """Multiply updates of layer l by `layer_multipliers[l]` (leading axis of the stacked
    params under `layers`, or `layers_<l>` when unrolled); with `train_last_layers`,
    updates outside the layers are zeroed except the final norm: the embeddings are frozen,
    and with them Peri-LN's embedding norm, which normalises their output."""
    mult = layer_multipliers(mcfg, tcfg)
    frozen_outside = tcfg.train_last_layers > 0

    def scale(path, u):
        names = _path_names(path)
        top = names[0]
        if top == "layers":
            return u * mult.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype)
        if top.startswith("layers_"):
            return u * mult[int(top.split("_")[1])].astype(u.dtype)
        if frozen_outside and top != "final_norm":
            return jnp.zeros_like(u)
        return u

    def update_fn(updates, state, params=None):
        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def param_labels(params):
    """The parameterisation's tensor role of every parameter (`parameterization.tensor_role`)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: P.tensor_role(_path_names(p)), params)


# roles whose tensors are matrices: weight decay applies (as `decay_mask`)
DECAYED_ROLES = (P.EMBEDDING, P.UNEMBEDDING, P.HIDDEN_MATRIX, P.FFN_OUT)


def scaled_adamw(tcfg, rule: P.TensorRule, decay: bool) -> optax.GradientTransformation:
    """`optax.adamw`'s own chain (scale_by_adam -> add_decayed_weights -> scale_by_learning
    _rate) with Adam's epsilon, the weight decay and the learning rate times `rule`'s
    multipliers; the decay stays coupled to the scaled learning rate, as in AdamW."""
    schedule = lr_schedule(tcfg)
    parts = [optax.scale_by_adam(b1=tcfg.b1, b2=tcfg.b2, eps=P.ADAM_EPS * rule.eps)]
    if decay and tcfg.weight_decay:
        parts.append(optax.add_decayed_weights(tcfg.weight_decay * rule.wd))
    lr = schedule if rule.lr == 1.0 else (lambda step: schedule(step) * rule.lr)
    parts.append(optax.scale_by_learning_rate(lr))
    return optax.chain(*parts)


def adamw(mcfg, tcfg) -> optax.GradientTransformation:
    """AdamW with the decay mask; under mup/completep one `scaled_adamw` per tensor role
    (`optax.multi_transform` over `param_labels`); sp keeps the one `optax.adamw` (so its
    optimizer state, and its checkpoints, are unchanged)."""
    if mcfg.parameterization == "sp":
        return optax.adamw(lr_schedule(tcfg), b1=tcfg.b1, b2=tcfg.b2, eps=P.ADAM_EPS,
                           weight_decay=tcfg.weight_decay, mask=decay_mask)
    rules = P.tensor_rules(mcfg)
    return optax.multi_transform(
        {role: scaled_adamw(tcfg, rules[role], role in DECAYED_ROLES) for role in P.ROLES},
        param_labels)


def make_optimizer(mcfg, tcfg) -> optax.GradientTransformation:
    """clip -> AdamW(schedule, decay mask; per tensor role under muP) -> per-layer
    scaling/freezing."""
    parts = []
    if tcfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(tcfg.grad_clip))
    parts.append(adamw(mcfg, tcfg))
    if tcfg.layer_lr_decay != 1.0 or tcfg.train_last_layers:
        parts.append(scale_by_layer(mcfg, tcfg))
    return optax.chain(*parts)
