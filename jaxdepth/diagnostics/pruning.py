"""Block pruning by the two published layer-pruning criteria, for n = 1 .. L // 2 layers.

- Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers" (arXiv
  2403.17887): prune the n consecutive layers whose input and output are closest,
  `l*(n) = argmin_l d(x_l, x_{l+n})`, d the angular distance `arccos(cos) / pi` of the last
  token averaged over text (`AngularDistances.last_token`; x_l is the stream entering layer
  l), i.e. drop layers l* .. l* + n - 1.
- ShortGPT, Men et al. 2024, "Layers in Large Language Models are More Redundant Than You
  Expect" (arXiv 2403.03853): Block Influence `BI_l = 1 - E_tokens[cos(x_l, x_{l+1})]`
  (`AngularDistances.block_influence`); drop the n layers of lowest BI.

The validation loss of every pruned model comes from one `masked_loss_sums` call (one compile,
shared with `removal.layer_removal`). Gromov et al. then "heal" the pruned model with QLoRA;
nothing here retrains: these are the losses of the pruned model as it is. A choice that can
only rest on NaN (every candidate block's distance NaN; fewer finite BIs than n) is no
choice: its block is None and its loss NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.diagnostics.forward import as_batches
from jaxdepth.diagnostics.removal import masked_loss_sums


def max_block(depth: int) -> int:
    """The largest block pruned, L // 2: Gromov et al. (arXiv 2403.17887) find QA accuracy
    holds until close to half the layers are gone."""
    return depth // 2


def _n_max(depth: int, n_max: int | None) -> int:
    n_max = max_block(depth) if n_max is None else int(n_max)
    if not 0 <= n_max <= depth:
        raise ValueError(f"block size n_max must be in 0..{depth}, got {n_max}")
    return n_max


def gromov_blocks(d_XX, n_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(start (N,), distance (N,)) for n = 1 .. N (default L // 2) from an (L + 1, L + 1)
    distance matrix (`[i, j]` between states i and j, index 0 the embeddings):
    `start[n - 1] = argmin_l d_XX[l, l + n]` over l = 0 .. L - n (Gromov et al. 2024, arXiv
    2403.17887, their pruning algorithm) and `distance[n - 1]` that minimum. NaN candidates are skipped; ties go
    to the shallowest block (the first minimum); -1 and NaN where every candidate is NaN."""
    d_XX = np.asarray(d_XX, np.float64)
    if d_XX.ndim != 2 or d_XX.shape[0] != d_XX.shape[1] or d_XX.shape[0] < 1:
        raise ValueError(f"expected an (L + 1, L + 1) distance matrix, got {d_XX.shape}")
    N = _n_max(d_XX.shape[0] - 1, n_max)
    start, distance = np.full(N, -1, np.int64), np.full(N, np.nan)
    for n in range(1, N + 1):
        cand_l = np.diagonal(d_XX, offset=n)  # d(x_l, x_{l+n}), l = 0 .. L - n
        if np.any(~np.isnan(cand_l)):
            start[n - 1] = int(np.argmin(np.where(np.isnan(cand_l), np.inf, cand_l)))
            distance[n - 1] = cand_l[start[n - 1]]
    return start, distance


def shortgpt_layers(bi_L, n_max: int | None = None) -> list[list[int] | None]:
    """For n = 1 .. N (default L // 2), the n layers of lowest Block Influence, ascending
    (ShortGPT, Men et al. 2024, arXiv 2403.03853: layers are removed in order of increasing
    BI, so each set holds the previous one). Ties go to the shallower layer; NaN ranks after
    every number, and a set that would need a NaN layer is None."""
    bi_L = np.asarray(bi_L, np.float64)
    if bi_L.ndim != 1:
        raise ValueError(f"expected a (L,) Block Influence vector, got {bi_L.shape}")
    N = _n_max(bi_L.shape[0], n_max)
    order = np.argsort(bi_L, kind="stable")  # NaN last
    n_finite = int(np.sum(~np.isnan(bi_L)))
    return [sorted(int(l) for l in order[:n]) if n <= n_finite else None for n in range(1, N + 1)]


def keep_mask(depth: int, dropped) -> np.ndarray:
    """(L,) bools, the model's `layer_mask_L`: False at the `dropped` layers (a dropped layer
    is the identity: its residual stream passes through unchanged)."""
    dropped = [int(l) for l in dropped]
    if any(not 0 <= l < depth for l in dropped):
        raise ValueError(f"layers {dropped} out of range for depth {depth}")
    keep = np.ones(depth, bool)
    keep[dropped] = False
    return keep


def pruning_masks(depth: int, starts, layer_sets, rows: int | None = None) -> np.ndarray:
    """(M, L) bools: row 0 keeps every layer; rows 1 .. N drop the Gromov block
    [starts[n - 1], starts[n - 1] + n); rows N + 1 .. 2N drop ShortGPT's `layer_sets[n - 1]`;
    an undefined choice (start -1, set None) keeps every layer; all-kept rows pad M to `rows`
    (default 2N + 1)."""
    starts = [int(s) for s in starts]
    N = len(starts)
    if len(layer_sets) != N:
        raise ValueError(f"{N} Gromov blocks but {len(layer_sets)} ShortGPT sets")
    masks = [np.ones(depth, bool)]
    masks += [keep_mask(depth, range(s, s + n) if s >= 0 else ())
              for n, s in enumerate(starts, start=1)]
    masks += [keep_mask(depth, ls if ls is not None else ()) for ls in layer_sets]
    rows = len(masks) if rows is None else rows
    if rows < len(masks):
        raise ValueError(f"{len(masks)} masks do not fit in {rows} rows")
    masks += [np.ones(depth, bool)] * (rows - len(masks))
    return np.stack(masks)


@dataclass(frozen=True)
class LayerPruning:
    base_loss: float  # every layer kept
    block_influence: np.ndarray  # (L,) ShortGPT's BI
    gromov_start: np.ndarray  # (N,) first layer l* of the dropped block, -1 if undefined
    gromov_distance: np.ndarray  # (N,) d(x_{l*}, x_{l*+n}), last token
    gromov_loss: np.ndarray  # (N,) loss with layers l* .. l* + n - 1 dropped
    shortgpt_layers: list  # N sets of layers (ascending), None if undefined
    shortgpt_loss: np.ndarray  # (N,) loss with those layers dropped
    n_tokens: int

    def to_dict(self) -> dict:
        """JSON-ready: lists, None for an undefined block."""
        n = list(range(1, len(self.gromov_start) + 1))
        return {
            "base_loss": self.base_loss,
            "block_influence": self.block_influence.tolist(),
            "gromov": {"n": n,
                       "start": [int(s) if s >= 0 else None for s in self.gromov_start],
                       "distance": self.gromov_distance.tolist(),
                       "loss": self.gromov_loss.tolist(),
                       "delta": (self.gromov_loss - self.base_loss).tolist()},
            "shortgpt": {"n": n, "layers": [None if s is None else list(s)
                                            for s in self.shortgpt_layers],
                         "loss": self.shortgpt_loss.tolist(),
                         "delta": (self.shortgpt_loss - self.base_loss).tolist()},
        }


def layer_pruning(params, mcfg, tokens, pad_id: int, d_last_XX, block_influence,
                  n_max: int | None = None) -> LayerPruning:
    """Validation loss with each Gromov block and each ShortGPT set of n = 1 .. N (default
    L // 2) layers dropped, on one batch (B, S) or a stack (C, B, S); `d_last_XX` is the
    last-token angular distance matrix and `block_influence` the (L,) BI, both from
    `angular.angular_distances` on the same tokens. Every mask, the unpruned one first, goes
    through one `masked_loss_sums` call, padded to the L + 1 masks of `layer_removal` so that
    both run one compiled function; losses are token-weighted means over non-pad targets."""
    L = mcfg.depth
    bi = np.asarray(block_influence, np.float64)
    if bi.shape != (L,):
        raise ValueError(f"block_influence must be ({L},), got {bi.shape}")
    if np.shape(d_last_XX) != (L + 1, L + 1):
        raise ValueError(f"d_last_XX must be ({L + 1}, {L + 1}), got {np.shape(d_last_XX)}")
    starts, distance = gromov_blocks(d_last_XX, n_max)
    sets = shortgpt_layers(bi, n_max)
    N = len(starts)
    masks = pruning_masks(L, starts, sets, rows=max(L + 1, 2 * N + 1))
    s = jax.device_get(masked_loss_sums(params, mcfg, as_batches(tokens), jnp.asarray(masks),
                                        pad_id))
    n_tok = int(s["n_tok"])
    losses = np.asarray(s["ce"], np.float64) / max(n_tok, 1)
    g_loss = np.where(starts >= 0, losses[1:N + 1], np.nan)
    s_loss = np.where(np.array([ls is not None for ls in sets], bool),
                      losses[N + 1:2 * N + 1], np.nan)
    return LayerPruning(base_loss=float(losses[0]), block_influence=bi, gromov_start=starts,
                        gromov_distance=distance, gromov_loss=g_loss, shortgpt_layers=sets,
                        shortgpt_loss=s_loss, n_tokens=n_tok)
