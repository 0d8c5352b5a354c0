"""Early exit by lens confidence (`jaxdepth.diagnostics.exits`): the numeric core against a
brute-force numpy count on hand-made per-layer logits, the confidence measures, and the
checks of `--exit-thresholds`. `jaxdepth analyze` writing the exits end to end is in
tests/test_diagnostics.py (beside its trained run)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdepth.cli import main
from jaxdepth.diagnostics.cli import _exit_thresholds
from jaxdepth.diagnostics.exits import check_thresholds, confidence, exits_of_logits
from jaxdepth.errors import UserError

L, B, T, V = 4, 3, 7, 6
THRESHOLDS = (1e-6, 0.3, 0.5, 0.8, 0.95, 1.5)


def _brute_force(logits_XBTV, targets_BT, mask_BT, thresholds, measure):
    """Token by token: exit after the first layer l = 1 .. L (index 0, the embeddings, is no
    exit) whose confidence is >= the threshold, else after layer L."""
    z = np.asarray(logits_XBTV, np.float64)[1:]
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    srt = np.sort(p, axis=-1)
    conf = srt[..., -1] if measure == "top1" else srt[..., -1] - srt[..., -2]
    out = {k: [] for k in ("depth", "ce", "agree")}
    hist = np.zeros((len(thresholds), L), np.int64)
    for k, thr in enumerate(np.float32(thresholds)):
        depth, ce, agree = [], [], []
        for b, t in zip(*np.nonzero(mask_BT)):
            e = next(l for l in range(L) if conf[l, b, t] >= thr or l == L - 1)
            hist[k, e] += 1
            depth.append(e + 1)
            ce.append(-np.log(p[e, b, t, targets_BT[b, t]]))
            agree.append(np.argmax(p[e, b, t]) == np.argmax(p[L - 1, b, t]))
        for key, v in zip(out, (depth, ce, agree)):
            out[key].append(np.mean(v))
    full = np.mean([-np.log(p[L - 1, b, t, targets_BT[b, t]])
                    for b, t in zip(*np.nonzero(mask_BT))])
    return {k: np.asarray(v) for k, v in out.items()} | {"hist": hist, "full": full}


@pytest.mark.parametrize("measure", ["top1", "gap"])
def test_exits_match_a_brute_force_count(measure):
    rng = np.random.default_rng(0)
    scale = np.array([50.0, 0.5, 1.5, 3.0, 6.0])  # sharper with depth; the embeddings sharpest
    logits = rng.normal(size=(L + 1, B, T, V)) * scale[:, None, None, None]
    targets = rng.integers(0, V, size=(B, T))
    mask = np.ones((B, T), np.float32)
    mask[0, 4:] = 0.0  # padding targets, not counted
    mask[2, 0] = 0.0
    ex = exits_of_logits(logits.astype(np.float32), targets, mask, THRESHOLDS, measure)
    ref = _brute_force(logits, targets, mask, THRESHOLDS, measure)
    n = int(mask.sum())
    assert ex.measure == measure and ex.n_tokens == n
    np.testing.assert_array_equal(ex.histogram, ref["hist"])
    np.testing.assert_array_equal(ex.histogram.sum(axis=1), n)
    np.testing.assert_allclose(ex.mean_depth, ref["depth"], rtol=1e-12)
    np.testing.assert_allclose(ex.early_fraction, 1 - ref["hist"][:, -1] / n, rtol=1e-12)
    np.testing.assert_allclose(ex.exit_loss, ref["ce"], rtol=1e-5)
    np.testing.assert_allclose(ex.agreement, ref["agree"], rtol=1e-6)
    np.testing.assert_allclose(ex.full_loss, ref["full"], rtol=1e-5)
    # lambda ~ 0: every token exits after layer 1 (never at the confident embeddings)
    assert ex.histogram[0, 0] == n and ex.mean_depth[0] == 1.0
    # lambda > 1: no token exits early; the exit is the full model
    assert ex.mean_depth[-1] == L and ex.early_fraction[-1] == 0.0 and ex.agreement[-1] == 1.0
    np.testing.assert_allclose(ex.exit_loss[-1], ex.full_loss, rtol=1e-6)
    assert np.any((ex.early_fraction > 0) & (ex.early_fraction < 1))  # not vacuous
    assert np.all(np.diff(ex.mean_depth) >= 0)  # a higher bar exits no earlier
    d = ex.to_dict()
    assert np.asarray(d["histogram"]).shape == (len(THRESHOLDS), L)
    assert d["thresholds"] == list(THRESHOLDS)


def test_confidence_measures():
    logits = np.log(np.array([[[0.2, 0.5, 0.3]]], np.float32))
    np.testing.assert_allclose(confidence(logits, "top1"), [[0.5]], rtol=1e-6)
    np.testing.assert_allclose(confidence(logits, "gap"), [[0.2]], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown confidence measure"):
        confidence(logits, "entropy")


def test_exit_thresholds_are_checked(tmp_path, capsys):
    assert _exit_thresholds(None) is None
    assert _exit_thresholds("0.9,0.5,0.9,1") == (0.5, 0.9, 1.0)
    for bad in ("0", "1.5", "-0.2", "nan"):
        with pytest.raises(UserError, match=r"in \(0, 1\]"):
            _exit_thresholds(bad)
    with pytest.raises(UserError, match="separated by commas"):
        _exit_thresholds("0.5;0.9")
    assert main(["analyze", str(tmp_path), "--exit-thresholds", "0.5,2"]) == 2
    assert "--exit-thresholds must be in (0, 1]" in capsys.readouterr().err
    for bad in ([], [0.5, float("nan")]):
        with pytest.raises(ValueError, match="finite exit thresholds"):
            check_thresholds(bad)
