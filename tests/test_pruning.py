"""Block pruning (Gromov et al. 2024, arXiv 2403.17887; ShortGPT, Men et al. 2024, arXiv
2403.03853): the selection rules on hand-made numbers, and on a tiny random model the Block
Influence against numpy and the pruned losses against `masked_loss_sums` and single-layer
removal. Three compiles in all (the angular pass, the L + 1 mask stack shared by removal and
pruning, and one direct 2-mask call) plus the reference forward pass."""

from __future__ import annotations

import json
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model

from jaxdepth.diagnostics.angular import angular_distances
from jaxdepth.diagnostics.cli import _layer_ranges, pruning_table
from jaxdepth.diagnostics.forward import as_batches, forward_hidden, inputs_targets_mask
from jaxdepth.diagnostics.pruning import (
    gromov_blocks,
    keep_mask,
    layer_pruning,
    pruning_masks,
    shortgpt_layers,
)
from jaxdepth.diagnostics.removal import layer_removal, masked_loss_sums
from jaxdepth.model import Transformer
from jaxdepth.train.build import resolve_model

DEPTH, PAD = 4, 0
NAN = math.nan

# ------------------------------------------------------------------ selection rules (numbers)


def _sym(upper: dict, L: int) -> np.ndarray:
    """(L + 1, L + 1) symmetric matrix, zero diagonal, from {(i, j): d} with i < j."""
    d = np.zeros((L + 1, L + 1))
    for (i, j), v in upper.items():
        d[i, j] = d[j, i] = v
    return d


def test_gromov_picks_the_first_least_distance_skipping_nan():
    d = _sym({(0, 1): .3, (1, 2): .1, (2, 3): .1, (3, 4): .2,  # n = 1: tie at l = 1, 2
              (0, 2): .5, (1, 3): NAN, (2, 4): .4,  # n = 2: NaN skipped, l = 2
              (0, 3): NAN, (1, 4): NAN,  # n = 3: no finite candidate
              (0, 4): .9}, 4)
    start, dist = gromov_blocks(d)  # default n = 1 .. L // 2
    np.testing.assert_array_equal(start, [1, 2])
    np.testing.assert_allclose(dist, [.1, .4])
    start, dist = gromov_blocks(d, n_max=4)
    np.testing.assert_array_equal(start, [1, 2, -1, 0])
    np.testing.assert_allclose(dist, [.1, .4, NAN, .9])
    assert gromov_blocks(d, n_max=0)[0].shape == (0,)
    assert gromov_blocks(np.zeros((2, 2)))[0].shape == (0,)  # depth 1: no block of n <= L/2
    with pytest.raises(ValueError, match="0..4"):
        gromov_blocks(d, n_max=5)
    with pytest.raises(ValueError, match="distance matrix"):
        gromov_blocks(np.zeros((4, 5)))


def test_shortgpt_drops_the_least_influential_layers_nan_last():
    bi = [.5, .1, .3, .1, NAN, .2]  # ascending: 1, 3 (tie, shallower first), 5, 2, 0, then 4
    assert shortgpt_layers(bi) == [[1], [1, 3], [1, 3, 5]]
    sets = shortgpt_layers(bi, n_max=6)
    assert sets[3:] == [[1, 2, 3, 5], [0, 1, 2, 3, 5], None]  # the 6th would be the NaN layer
    assert all(set(a) <= set(b) for a, b in zip(sets[:4], sets[1:5]))  # nested, as ShortGPT
    assert shortgpt_layers([NAN, NAN]) == [None]
    with pytest.raises(ValueError, match="vector"):
        shortgpt_layers(np.zeros((2, 2)))


def test_masks_keep_all_but_the_dropped_layers():
    np.testing.assert_array_equal(keep_mask(4, [1, 2]), [True, False, False, True])
    np.testing.assert_array_equal(keep_mask(3, []), [True] * 3)
    with pytest.raises(ValueError, match="out of range"):
        keep_mask(3, [3])
    m = pruning_masks(4, starts=[2, -1], layer_sets=[[0], None], rows=6)
    chex.assert_shape(m, (6, 4))
    np.testing.assert_array_equal(m.astype(int), [[1, 1, 1, 1],  # unpruned
                                                  [1, 1, 0, 1],  # Gromov n = 1: [2, 3)
                                                  [1, 1, 1, 1],  # Gromov n = 2: undefined
                                                  [0, 1, 1, 1],  # ShortGPT n = 1: {0}
                                                  [1, 1, 1, 1],  # ShortGPT n = 2: undefined
                                                  [1, 1, 1, 1]])  # padding
    assert pruning_masks(4, [1], [[3]]).shape == (3, 4)
    with pytest.raises(ValueError, match="do not fit"):
        pruning_masks(4, [1], [[3]], rows=2)
    with pytest.raises(ValueError, match="ShortGPT sets"):
        pruning_masks(4, [1, 2], [[3]])


def test_summary_table_names_blocks_and_layers():
    assert _layer_ranges([1, 2, 3, 5, 7, 8]) == "1-3,5,7-8"
    assert _layer_ranges(None) == "-" and _layer_ranges([]) == ""
    a = {"pruning": {"gromov": {"n": [1, 2], "start": [3, None], "distance": [.05, None],
                                "delta": [.01, None]},
                     "shortgpt": {"n": [1, 2], "layers": [[3], [2, 3]],
                                  "delta": [.01, .2]}}}
    lines = pruning_table(a).splitlines()
    assert "gromov [l*,l*+n)" in lines[0] and "shortgpt layers" in lines[0]
    assert lines[2].split() == ["1", "[3,", "4)", "0.0500", "0.0100", "3", "0.0100"]
    assert lines[3].split() == ["2", "-", "-", "-", "2-3", "0.2000"]


def test_figure_draws_undefined_choices_and_depth_one(tmp_path):
    from jaxdepth.diagnostics.plots import pruning_curves

    prune = {"base_loss": 3.0, "block_influence": [.2, NAN, .05],
             "gromov": {"n": [1], "start": [None], "distance": [None], "loss": [None],
                        "delta": [None]},
             "shortgpt": {"n": [1], "layers": [[2]], "loss": [3.1], "delta": [.1]}}
    a = {"scheme": "pre", "depth": 3, "step": 5, "pruning": prune,
         "effective_depth": {"removal_threshold": .01}}
    assert pruning_curves(a, tmp_path / "p.png").stat().st_size > 1000
    one = {"base_loss": 3.0, "block_influence": [.2], "gromov": {k: [] for k in prune["gromov"]},
           "shortgpt": {k: [] for k in prune["shortgpt"]}}
    a = {**a, "depth": 1, "pruning": one}
    assert pruning_curves(a, tmp_path / "one.png").stat().st_size > 1000


# ------------------------------------------------------------------ on a tiny model


@pytest.fixture(scope="module")
def model():
    """A depth-4 random `pre` model and two batches (2, 2, 9) of tokens, one row padded after
    its 5th token (so pad targets are excluded) and one row with no counted target."""
    mcfg = resolve_model(tiny_model(depth=DEPTH, dtype="float32"), 64)
    tokens = np.array(jax.random.randint(jax.random.key(1), (2, 2, 9), 1, mcfg.vocab_size))
    tokens[0, 1, 5:] = PAD
    tokens[1, 0, 1:] = PAD
    init = jax.jit(Transformer(mcfg).init)  # one compile: faster than the eager init
    params = nn.unbox(init(jax.random.key(0), jnp.asarray(tokens[0, :, :-1]))["params"])
    return mcfg, params, tokens


def test_block_influence_is_one_minus_mean_cos(model):
    mcfg, params, tokens = model
    ang = angular_distances(params, mcfg, tokens, PAD)
    fwd = jax.jit(forward_hidden, static_argnums=1)
    cos, counted = [], []
    for tokens_BS in as_batches(tokens):
        inputs_BT, _, mask_BT = inputs_targets_mask(tokens_BS, PAD)
        h = np.asarray(fwd(params, mcfg, inputs_BT)[1], np.float64)  # (L + 1, B, T, W)
        unit = h / np.linalg.norm(h, axis=-1, keepdims=True)
        cos.append(np.sum(unit[:-1] * unit[1:], -1).reshape(DEPTH, -1))
        counted.append(np.asarray(mask_BT).reshape(-1) > 0)
    cos, counted = np.concatenate(cos, 1), np.concatenate(counted)
    assert counted.sum() == ang.n_tokens == 8 + 4 + 0 + 8
    bi = 1.0 - cos[:, counted].mean(1)
    chex.assert_shape(ang.block_influence, (DEPTH,))
    np.testing.assert_allclose(ang.block_influence, bi, rtol=1e-4, atol=1e-6)
    assert np.all(bi > 1e-3)  # not vacuous
    # the mean of the cosine, not the cosine of the mean angle
    assert np.all(np.abs(bi - (1 - np.cos(np.pi * np.diagonal(ang.all_tokens, 1)))) > 1e-6)


def test_pruned_losses_are_those_of_their_masks(model):
    mcfg, params, tokens = model
    ang = angular_distances(params, mcfg, tokens, PAD)
    pr = layer_pruning(params, mcfg, tokens, PAD, ang.last_token, ang.block_influence)
    rem = layer_removal(params, mcfg, tokens, PAD)  # the same compiled function
    N = DEPTH // 2
    np.testing.assert_array_equal(pr.gromov_start, gromov_blocks(ang.last_token)[0])
    assert pr.shortgpt_layers == shortgpt_layers(ang.block_influence)
    assert pr.n_tokens == rem.n_tokens and len(pr.gromov_loss) == len(pr.shortgpt_loss) == N
    np.testing.assert_allclose(pr.base_loss, rem.base_loss, rtol=1e-6)
    # n = 1: Gromov's block is one layer, its loss that layer's removal loss
    np.testing.assert_allclose(pr.gromov_loss[0], rem.loss[pr.gromov_start[0]], rtol=1e-6)
    np.testing.assert_allclose(pr.shortgpt_loss[0], rem.loss[pr.shortgpt_layers[0][0]], rtol=1e-6)
    # n = 2, each block's mask on its own (another number of masks: another compile)
    l = int(pr.gromov_start[1])
    masks = np.stack([keep_mask(DEPTH, [l, l + 1]), keep_mask(DEPTH, pr.shortgpt_layers[1])])
    s = masked_loss_sums(params, mcfg, as_batches(tokens), jnp.asarray(masks), PAD)
    direct = np.asarray(s["ce"], np.float64) / float(s["n_tok"])
    np.testing.assert_allclose([pr.gromov_loss[1], pr.shortgpt_loss[1]], direct, rtol=1e-5)
    assert np.all(np.abs(direct - pr.base_loss) > 1e-4)  # the layers matter

    d = json.loads(json.dumps(pr.to_dict()))
    assert d["gromov"]["n"] == d["shortgpt"]["n"] == [1, 2]
    assert d["gromov"]["start"] == [int(s) for s in pr.gromov_start]
    np.testing.assert_allclose(d["gromov"]["delta"], pr.gromov_loss - pr.base_loss)
    np.testing.assert_allclose(d["gromov"]["distance"],
                               [ang.last_token[l, l + n] for n, l in zip((1, 2), pr.gromov_start)])
    np.testing.assert_allclose(d["block_influence"], ang.block_influence)
