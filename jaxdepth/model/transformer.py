"""Decoder-only LM: embed (+ learned positions) -> (the scheme's embedding norm) ->
nn.scan(Block) over the layer index -> (the scheme's final norm) -> logits.

Precision (Micikevicius et al. 2018, arXiv 1710.03740): parameters in `model.param_dtype`,
matmuls in the compute dtype, norms' statistics, the attention softmax and the residual
stream in float32, and the logits accumulated and returned in float32."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.config import ModelConfig
from jaxdepth.model import dwa
from jaxdepth.model import parameterization as P
from jaxdepth.model.block import Block
from jaxdepth.model.layers import init, make_norm, shard_batch, zeros
from jaxdepth.model.precision import (
    backend,
    compute_dtype,
    param_dtype,
    remat_for,
    residual_dtype,
)
from jaxdepth.model.schemes import get_scheme


def remat_policy(name: str):
    """`model.remat` -> a jax.checkpoint policy: "full" saves nothing (recompute the whole
    block), any other name is that policy of `jax.checkpoint_policies`."""
    return None if name == "full" else getattr(jax.checkpoint_policies, name)


def remat_name(cfg: ModelConfig) -> str:
    """`cfg.remat`, with an unresolved `auto` (a model built outside `precision.resolve`)
    resolved for the default backend."""
    return remat_for(cfg.remat, backend()[0]) if cfg.remat == "auto" else cfg.remat


def block_class(cfg: ModelConfig, return_hidden: bool):
    """The Block, rematerialised per `cfg.remat`, scanned over layers if `cfg.scan_layers`
    (with DenseFormer's history as scan state under `cfg.dwa`: `DenseLayer`)."""
    cls = Block
    if (remat := remat_name(cfg)) != "none":
        cls = nn.remat(Block, policy=remat_policy(remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
        in_axes = (0, 0)
        if cfg.dwa:
            cls, in_axes = functools.partial(DenseLayer, block_cls=cls), (0, 0, 0, 0)
        # Params stacked on a leading "layers" axis; (l, keep) scanned in as inputs
        # (layer index as data, as in levanter/haliax), stats and hidden scanned out.
        cls = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=in_axes, length=cfg.depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    return cls


class DenseLayer(nn.Module):
    """The scan body under DenseFormer (`jaxdepth.model.dwa`): `((x, hist), l, keep, a_X,
    active) -> ((x', hist'), (stats, hidden))`. The block's output X_{l+1} is written to the
    history (L + 1, B, T, W), and where a DWA follows this layer the stream passed on is
    `sum_j a_j X_j`. The block's parameters live in this module's own scope
    (`nn.share_scope`), so a DenseFormer's layer parameters are named as a plain model's."""

    cfg: ModelConfig
    return_hidden: bool = False
    block_cls: type = Block

    def setup(self):
        self.block = self.block_cls(self.cfg, False)
        nn.share_scope(self, self.block)

    def __call__(self, carry, l, keep, a_X, active):
        x_BTW, hist_XBTW = carry
        x_BTW, (stats, _) = self.block(x_BTW, l, keep)
        hist_XBTW = jax.lax.dynamic_update_index_in_dim(
            hist_XBTW, x_BTW.astype(hist_XBTW.dtype), l + 1, 0)
        x_BTW = jax.lax.cond(active, lambda: dwa.average(a_X, hist_XBTW).astype(x_BTW.dtype),
                             lambda: x_BTW)
        return (x_BTW, hist_XBTW), (stats, x_BTW if self.return_hidden else None)


class Transformer(nn.Module):
    """`tokens_BT -> (logits_BTV, aux)`; `aux["stats"]` holds per-layer scalars of shape
    (L,), `aux["hidden"]` (if `return_hidden`) the residual stream entering layer 0 and
    leaving every layer, `h_XBTW` (X = L + 1). `layer_mask_L` bools: False makes that layer
    the identity (layer removal without recompiling)."""

    cfg: ModelConfig  # vocab_size resolved
    return_hidden: bool = False  # same params either way; diagnostics set it

    def setup(self):
        cfg = self.cfg
        scheme = get_scheme(cfg.scheme)
        # The lookup returns the residual stream's float32 (exact: it only gathers rows).
        self.embed = nn.Embed(cfg.vocab_size, cfg.width, dtype=residual_dtype(cfg),
                              param_dtype=param_dtype(cfg),
                              embedding_init=init(cfg.init_std, ("vocab", "embed")))
        # GPT-2's learned position table (Radford et al. 2019), added to the token embedding
        self.pos_embed = (nn.Embed(cfg.max_positions, cfg.width, dtype=residual_dtype(cfg),
                                   param_dtype=param_dtype(cfg),
                                   embedding_init=init(cfg.init_std, (None, "embed")))
                          if cfg.positions == "learned" else None)
        self.embed_norm = (make_norm(cfg, "embed_norm", residual_dtype(cfg))
                           if scheme.embed_norm else None)
        self.final_norm = make_norm(cfg, "final_norm") if scheme.final_norm else None
        if not cfg.tied_embeddings:
            self.head = nn.Dense(
                cfg.vocab_size, use_bias=False, dtype=compute_dtype(cfg),
                param_dtype=param_dtype(cfg), kernel_init=init(cfg.init_std, ("embed", "vocab")),
                dot_general=functools.partial(jax.lax.dot_general,
                                              preferred_element_type=jnp.float32))
        if cfg.dwa:  # DenseFormer's weights, a = I + delta (jaxdepth.model.dwa)
            self.dwa_delta = self.param("dwa_weights", zeros(("layers", None)),
                                        (cfg.depth, cfg.depth + 1), param_dtype(cfg))
        cls = block_class(cfg, self.return_hidden)
        if cfg.scan_layers:
            self.layers = cls(cfg, self.return_hidden)
        else:
            self.layers = [cls(cfg, self.return_hidden) for _ in range(cfg.depth)]

    def unembed(self, h_BTW):
        """Final norm (if the scheme has one) and unembedding, logits in float32. Also the
        logit lens when applied to an intermediate residual stream (nostalgebraist 2020).
        The matmul takes compute-dtype inputs and accumulates and returns float32
        (`preferred_element_type`): a bfloat16 output would round every logit to 8
        significant bits before the softmax and the loss."""
        if self.final_norm is not None:
            h_BTW = self.final_norm(h_BTW)
        dtype = compute_dtype(self.cfg)
        if not self.cfg.tied_embeddings:
            logits = self.head(h_BTW.astype(dtype))
        else:
            logits = jnp.einsum("...w,vw->...v", h_BTW.astype(dtype),
                                self.embed.embedding.astype(dtype),
                                preferred_element_type=jnp.float32)
        mult = P.output_multiplier(self.cfg)  # muP: output_mult / m_W (arXiv 2203.03466)
        return logits if mult == 1.0 else logits * mult

    def __call__(self, tokens_BT, layer_mask_L=None):
        cfg = self.cfg
        x_BTW = self.embed(tokens_BT)
        if self.pos_embed is not None:
            x_BTW = x_BTW + self.pos_embed(jnp.arange(tokens_BT.shape[-1]))[None]
        x_BTW = shard_batch(x_BTW)
        if (mult := P.input_multiplier(cfg)) != 1.0:  # muP's optional input multiplier
            x_BTW = x_BTW * mult
        if self.embed_norm is not None:
            x_BTW = self.embed_norm(x_BTW).astype(residual_dtype(cfg))
        x0_BTW = x_BTW
        keep_L = (jnp.ones(cfg.depth, bool) if layer_mask_L is None
                  else jnp.asarray(layer_mask_L, bool))
        layer_L = jnp.arange(cfg.depth)
        if cfg.dwa:
            x_BTW, (stats, hidden) = self._dense_stack(x_BTW, layer_L, keep_L)
        elif cfg.scan_layers:
            x_BTW, (stats, hidden) = self.layers(x_BTW, layer_L, keep_L)
        else:
            outs = []
            for i, layer in enumerate(self.layers):
                x_BTW, out = layer(x_BTW, layer_L[i], keep_L[i])
                outs.append(out)
            stats, hidden = jax.tree.map(lambda *a: jnp.stack(a), *outs)
        aux = {"stats": stats}
        if self.return_hidden:
            aux["hidden"] = jnp.concatenate([x0_BTW[None], hidden], axis=0)
        return self.unembed(x_BTW), aux

    def _dense_stack(self, x_BTW, layer_L, keep_L):
        """The layers under DenseFormer: scanned with the history of block outputs as scan
        state, or unrolled over a list of them (each kept once: O(L) memory)."""
        cfg = self.cfg
        a_LX = dwa.dwa_weights(self.dwa_delta, cfg)
        active_L = dwa.dwa_active(cfg)
        if cfg.scan_layers:
            hist_XBTW = jnp.zeros((cfg.depth + 1,) + x_BTW.shape, x_BTW.dtype).at[0].set(x_BTW)
            (x_BTW, _), out = self.layers((x_BTW, hist_XBTW), layer_L, keep_L, a_LX,
                                          jnp.asarray(active_L))
            return x_BTW, out
        allowed_LX = dwa.dwa_mask(cfg)
        hist, outs = [x_BTW], []
        for i, layer in enumerate(self.layers):
            x_BTW, (stats, _) = layer(x_BTW, layer_L[i], keep_L[i])
            hist.append(x_BTW)
            if active_L[i]:
                x_BTW = sum(a_LX[i, j] * hist[j] for j in np.flatnonzero(allowed_LX[i]))
            outs.append((stats, x_BTW if self.return_hidden else None))
        return x_BTW, jax.tree.map(lambda *a: jnp.stack(a), *outs)


def count_params(params, non_embedding: bool = False) -> int:
    """Number of parameters; `non_embedding` drops the embedding/unembedding tables
    (Kaplan et al. 2020, arXiv 2001.08361, count N without embeddings)."""
    params = nn.unbox(params)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = 0
    for path, leaf in leaves:
        keys = "/".join(str(getattr(k, "key", k)) for k in path)
        if non_embedding and keys.split("/")[0] in ("embed", "pos_embed", "head"):
            continue
        total += leaf.size
    return int(total)
