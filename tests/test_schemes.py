"""Every scheme in the registry: its defining property, and a few training steps at depth 8
on the embedded corpus (one compiled init + 3 steps per scheme)."""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model

from jaxdepth.config import RunConfig, replace
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer
from jaxdepth.model.schemes import LNS_BASES, SCHEMES, mix_is_pre
from jaxdepth.train.build import resolve_model
from jaxdepth.train.optim import lr_schedule, make_optimizer
from jaxdepth.train.step import TrainState, make_train_step

DEPTH, WIDTH, SEQ, BATCH, STEPS = 8, 32, 32, 4, 3
# These tests are compile-bound on CPU; XLA's backend optimisation doubles compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def coeffs_over_layers(scheme, L, **cfg_kw):
    """Coeffs of every layer l = 0..L-1 with l traced as in the scanned stack."""
    cfg = tiny_model(scheme=scheme, depth=L, **cfg_kw)
    return [SCHEMES[scheme].coeffs(jnp.asarray(l), L, cfg) for l in range(L)]


@functools.lru_cache(maxsize=1)
def corpus_batch():
    from jaxdepth.data.pipeline import load_corpus, train_iterator

    cfg = run_config("pre")
    corpus = load_corpus(cfg.data)
    return corpus, next(train_iterator(corpus, cfg.data))["tokens"]


def run_config(scheme):
    return replace(RunConfig(), model=dict(depth=DEPTH, width=WIDTH, heads=2, scheme=scheme),
                   data=dict(seq_len=SEQ, batch_size=BATCH),
                   train=dict(steps=STEPS, warmup_steps=0))


def _zero_branches(params):
    """The same params with every sublayer's output projection zeroed (F(x) = 0)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if any(
            getattr(k, "key", "") in ("out", "down") for k in path) else x, params)


def _program(scheme, pad_id, vocab):
    """`(rng, tokens) -> results` for one scheme: init as `build` does (key(train.seed)),
    the initial forward with the residual stream (and with every branch zeroed), then 3
    steps of the core's pure `train_step` (the step `jaxdepth train` jits) in a scan."""
    cfg = run_config(scheme)
    mcfg = resolve_model(cfg.model, vocab)
    model, probe = Transformer(mcfg), Transformer(mcfg, return_hidden=True)
    tx = make_optimizer(mcfg, cfg.train)
    step = make_train_step(model, tx, lr_schedule(cfg.train), pad_id, DEPTH)

    def run(rng, tokens_BS1):
        params = nn.unbox(model.init(rng, tokens_BS1[:, :-1])["params"])
        _, aux = probe.apply({"params": params}, tokens_BS1[:, :-1])
        _, aux0 = probe.apply({"params": _zero_branches(params)}, tokens_BS1[:, :-1])
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=rng)
        batches = jnp.broadcast_to(tokens_BS1, (STEPS, *tokens_BS1.shape))
        state, m = jax.lax.scan(lambda s, t: step(s, {"tokens": t}), state, batches)
        return dict(params0=params, hidden=aux["hidden"], stats=aux["stats"],
                    hidden_no_branch=aux0["hidden"], losses=m["loss"], params=state.params)

    return run


@functools.lru_cache(maxsize=1)
def results() -> dict:
    """Every scheme's results from ONE jitted call (a joint compile costs about half of
    one compile per scheme on CPU)."""
    corpus, tokens = corpus_batch()
    tok = corpus.tokenizer
    programs = {s: _program(s, tok.pad_id, tok.vocab_size) for s in SCHEMES}
    fn = jax.jit(lambda rng, t: {s: f(rng, t) for s, f in programs.items()},
                 compiler_options=FAST_COMPILE)
    out = fn(jax.random.key(RunConfig().train.seed), jnp.asarray(tokens))
    return jax.tree.map(np.asarray, jax.device_get(out))


def param_names(scheme):
    mcfg = dataclasses.replace(tiny_model(scheme=scheme, depth=2))
    shapes = jax.eval_shape(lambda: Transformer(mcfg).init(
        jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
    return ["/".join(str(getattr(k, "key", k)) for k in path)
            for path, _ in jax.tree_util.tree_leaves_with_path(nn.unbox(shapes))]


# ------------------------------------------------------------------ registry


def test_unknown_scheme_lists_every_valid_one():
    with pytest.raises(UserError) as e:
        replace(RunConfig(), model=dict(scheme="peri_ln"))
    msg = str(e.value)
    assert "model.scheme 'peri_ln'" in msg and "\n" not in msg
    for name in SCHEMES:
        assert name in msg


def test_every_scheme_cites_a_source():
    for name, s in SCHEMES.items():
        assert "arXiv" in s.cite or "§2" in s.cite, name
        if s.coeffs.__doc__:  # the registered functions; lns+ ones are made by with_lns
            assert "arXiv" in s.coeffs.__doc__ or "§2" in s.coeffs.__doc__, name


def as_plain(c) -> dict:
    """Coeffs as Python values (traced 0-d arrays -> float), for comparison."""
    return {k: (v if isinstance(v, str) else float(v)) for k, v in dataclasses.asdict(c).items()}


@pytest.mark.parametrize("base", LNS_BASES)
def test_lns_composition_scales_only_the_normalised_input(base):
    L = 8
    plain, lns = coeffs_over_layers(base, L), coeffs_over_layers(f"lns+{base}", L)
    assert SCHEMES[f"lns+{base}"].final_norm == SCHEMES[base].final_norm
    for l, (c, d) in enumerate(zip(plain, lns)):
        pre = float(c.pre)
        want = float(c.in_scale) * (1.0 / math.sqrt(l + 1) if pre == 1.0 else 1.0)
        np.testing.assert_allclose(float(d.in_scale), want, rtol=1e-6)
        assert {**as_plain(d), "in_scale": 0} == {**as_plain(c), "in_scale": 0}


def test_lns_is_lns_plus_pre():
    for l in range(5):
        c = SCHEMES["lns"].coeffs(jnp.asarray(l), 5, tiny_model())
        np.testing.assert_allclose(float(c.in_scale), 1.0 / math.sqrt(l + 1), rtol=1e-6)


# ------------------------------------------------------------------ defining properties


@pytest.mark.parametrize("L", [4, 8, 24])
def test_deepnorm_alpha_and_beta(L):
    c = coeffs_over_layers("deepnorm", L)[0]
    assert c.residual == pytest.approx((2 * L) ** 0.25)
    assert c.init_gain == pytest.approx((8 * L) ** -0.25)
    assert (c.pre, c.post) == (False, True)  # Post-LN placement
    assert not SCHEMES["deepnorm"].final_norm


def test_deepnorm_init_gain_on_value_out_and_ffn_not_on_query_key():
    layers = results()["deepnorm"]["params0"]["layers"]
    std = lambda x: float(np.std(np.asarray(x)))  # noqa: E731
    beta = (8 * DEPTH) ** -0.25
    q = std(layers["attn"]["query"]["kernel"])
    assert std(layers["attn"]["key"]["kernel"]) == pytest.approx(q, rel=0.05)
    assert q == pytest.approx(0.02, rel=0.05)
    for w in (layers["attn"]["value"], layers["attn"]["out"], layers["ffn"]["up"],
              layers["ffn"]["gate"], layers["ffn"]["down"]):
        assert std(w["kernel"]) / q == pytest.approx(beta, rel=0.05)


@pytest.mark.parametrize("L,fraction,n_post",
                         [(8, 0.25, 2), (10, 0.25, 2), (8, 0.5, 4), (7, 0.0, 0)])
def test_mix_switches_from_post_to_pre_at_floor_fraction_L(L, fraction, n_post):
    cs = coeffs_over_layers("mix", L, mix_fraction=fraction)
    n_pre = L - n_post
    np.testing.assert_array_equal([float(c.pre) for c in cs], [0.0] * n_post + [1.0] * n_pre)
    np.testing.assert_array_equal([float(c.post) for c in cs], [1.0] * n_post + [0.0] * n_pre)
    assert bool(mix_is_pre(L - 1, L, tiny_model(mix_fraction=fraction)))


def test_mix_first_layers_compute_exactly_post_ln():
    """Same seed, same names -> the same attention/FFN weights as `post` (norm scales are 1
    at init): Mix-LN's first floor(L/4) layers give Post-LN's stream (RMS 1), the Pre-LN
    layers after them do not."""
    mix, post = results()["mix"], results()["post"]
    for k in ("attn", "ffn"):
        jax.tree.map(np.testing.assert_array_equal, mix["params0"]["layers"][k],
                     post["params0"]["layers"][k])
    h_mix, h_post = mix["hidden"], post["hidden"]
    k = DEPTH // 4
    np.testing.assert_allclose(h_mix[: k + 1], h_post[: k + 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(h_mix[1: k + 1]), axis=(1, 2, 3))),
                               1.0, atol=1e-4)
    for l in range(k + 1, DEPTH + 1):
        assert not np.allclose(h_mix[l], h_post[l], rtol=1e-3, atol=1e-5), l


def test_rezero_gates_are_zero_scalars_and_the_stack_is_the_identity():
    r = results()["rezero"]
    for g in ("attn_gate", "ffn_gate"):
        assert r["params0"]["layers"][g].shape == (DEPTH,)
        np.testing.assert_array_equal(r["params0"]["layers"][g], 0.0)
    h = r["hidden"]
    for l in range(1, DEPTH + 1):
        np.testing.assert_array_equal(h[l], h[0])
    assert not any("norm" in n for n in param_names("rezero"))


def test_layerscale_gates_are_per_channel_at_the_configured_init():
    p = results()["layerscale"]["params0"]
    for g in ("attn_gate", "ffn_gate"):
        assert p["layers"][g].shape == (DEPTH, WIDTH)
        np.testing.assert_array_equal(p["layers"][g], np.float32(RunConfig().model.layerscale_init))
    assert any(n.endswith("attn_norm_in/scale") for n in param_names("layerscale"))


def test_depth_mup_scales_the_branch_by_inverse_sqrt_depth():
    for L in (4, 9, 32):
        assert coeffs_over_layers("depth_mup", L)[0].branch == pytest.approx(1 / math.sqrt(L))
    # same weights as pre (same parameter tree and seed): the first layer's update is 1/sqrt(L)
    # (the attention sublayer of layer 0 sees the same input in both; the FFN after it not)
    s_pre, s_mup = results()["pre"]["stats"], results()["depth_mup"]["stats"]
    assert s_mup["attn_update_ratio"][0] == pytest.approx(
        s_pre["attn_update_ratio"][0] / math.sqrt(DEPTH), rel=1e-4)


def test_no_residual_has_no_skip_path_and_pre_has_one():
    """Zero the output projections (F = 0): a layer with a skip path passes x through, a
    layer without one outputs 0."""
    for scheme, identity in (("pre", True), ("no_residual", False)):
        h = results()[scheme]["hidden_no_branch"]
        if identity:
            np.testing.assert_array_equal(h[-1], h[0])
        else:
            np.testing.assert_array_equal(h[1:], 0.0)


def test_no_norm_has_no_norm_parameters_but_keeps_the_skip():
    for scheme in ("no_norm", "none", "rezero"):
        names = param_names(scheme)
        assert not any("norm" in n for n in names), (scheme, names)
    assert coeffs_over_layers("no_norm", 4)[0].residual == 1.0
    assert any("norm" in n for n in param_names("no_residual"))


def test_sandwich_and_peri_normalise_sublayer_outputs_peri_also_the_embeddings():
    for scheme in ("sandwich", "peri"):
        names = param_names(scheme)
        for n in ("attn_norm_in", "attn_norm_out", "ffn_norm_in", "ffn_norm_out"):
            assert any(f"/{n}/" in x for x in names), (scheme, n)
    assert "embed_norm/scale" in param_names("peri")
    assert not any("embed_norm" in x for x in param_names("sandwich"))
    # layer 0: the update N(F(.)) has RMS ~1 (a little under: the norm's eps is not small
    # against F's tiny init outputs); peri's stream is normalised first (RMS 1), so the
    # update ratio is ~1, sandwich's stream is the raw embedding (RMS ~0.02)
    s_peri, s_sand = results()["peri"]["stats"], results()["sandwich"]["stats"]
    assert 0.9 < s_peri["attn_update_ratio"][0] < 1.01
    assert s_sand["attn_update_ratio"][0] > 20.0
    # the embedding norm is peri's only difference: one norm, outside the scanned layers
    assert set(param_names("peri")) - set(param_names("sandwich")) == {"embed_norm/scale"}
    assert SCHEMES["peri"].embed_norm and not SCHEMES["sandwich"].embed_norm


# ------------------------------------------------------------------ every scheme trains


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_trains_three_steps_at_depth_8(scheme):
    r = results()[scheme]
    params0, losses, params = r["params0"], r["losses"], r["params"]
    assert losses.shape == (STEPS,) and np.all(np.isfinite(losses))
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), params0, params))
    assert any(changed)
    if scheme == "none":
        # the naive stack's stream underflows to 0 at init: no gradient reaches the layers
        assert losses[-1] == pytest.approx(losses[0], abs=1e-3)
    else:
        assert losses[-1] < losses[0] - 1e-3, losses


# ------------------------------------------------------------------ no unused parameters


@pytest.mark.parametrize("scheme", sorted(set(SCHEMES) - {"none"}))
def test_three_steps_move_every_parameter_of_every_layer(scheme):
    """A scanned layer holds only parameters its scheme uses: three AdamW steps (norm
    scales are not decayed) move every one in every layer. Before, Peri-LN's embedding norm
    sat unused in layers 1..L-1 and Mix-LN held a pre and a post norm per sublayer, one of
    them idle. (`none` is excluded: its stream underflows, no gradient reaches a layer.)"""
    r = results()[scheme]
    after = dict(jax.tree_util.tree_leaves_with_path(r["params"]["layers"]))
    for path, before in jax.tree_util.tree_leaves_with_path(r["params0"]["layers"]):
        moved_L = np.any(after[path] != before, axis=tuple(range(1, before.ndim)))
        assert moved_L.all(), (scheme, jax.tree_util.keystr(path), np.nonzero(~moved_L)[0])


def test_mix_holds_pre_ln_parameter_count_and_peri_one_norm_more_than_sandwich():
    counts = {s: len(param_names(s)) for s in ("pre", "mix", "lns+mix", "sandwich", "peri")}
    assert counts["mix"] == counts["lns+mix"] == counts["pre"]
    assert counts["peri"] == counts["sandwich"] + 1
    assert {n for n in param_names("mix") if "norm" in n} == {
        "layers/attn_norm/scale", "layers/ffn_norm/scale", "final_norm/scale"}
