"""Sharded training on 8 host CPU devices (one subprocess, `tests/_mesh_driver.py meshes`):
meshes (8,1,1), (2,4,1), (2,2,2) against one device, ZeRO-3 shard sizes, mesh errors, and
a checkpoint saved as data=2,fsdp=4 on 8 devices resumed as fsdp=4 on 4 devices.

Tolerances. The runs see the same data, init and schedule; only the order of float32
reductions differs (the loss and gradient sums are split across shards and all-reduced, and
XLA fuses differently per mesh). A reordered sum of n float32 terms differs by about
sqrt(n) * 1.2e-7 relative, so losses get rtol 1e-5 (observed: ~4e-7) and per-layer
statistics rtol 1e-4 (norms of gradient slices, observed: ~2e-6). Params after 4 AdamW
steps at lr 1e-2 get atol 1e-4: Adam's m / sqrt(v) passes gradient noise through
unscaled, so a step's error is ~lr times the relative gradient error, except for
coordinates whose gradient is ~0, where it can be a larger fraction of lr; 1e-4 is 1% of
one step's size (each step moves a coordinate by up to ~lr), observed: ~1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
from _procs import run_driver

from jaxdepth.rundir import read_json, read_metrics

MESHES = ["mesh_8x1x1", "mesh_2x4x1", "mesh_2x2x2"]
LOSS_RTOL, STATS_RTOL, PARAM_ATOL = 1e-5, 1e-4, 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh")
    result = run_driver(["meshes", out], devices=8, log=out / "driver.log", timeout=420)
    return out, result


def params(run_dir):
    z = np.load(run_dir / "params.npz")
    return int(z["step"]), {k: z[k] for k in z.files if k != "step"}


def assert_same_run(run_dir, ref_dir):
    got, ref = read_metrics(run_dir), read_metrics(ref_dir)
    assert [m["step"] for m in got] == [m["step"] for m in ref] == [1, 2, 3, 4]
    np.testing.assert_allclose([m["loss"] for m in got], [m["loss"] for m in ref],
                               rtol=LOSS_RTOL)
    np.testing.assert_allclose(got[-1]["val_loss"], ref[-1]["val_loss"], rtol=LOSS_RTOL)
    for g, r in zip(got, ref):
        assert g["layers"].keys() == r["layers"].keys()
        for name in r["layers"]:  # per-layer stats: scan outputs, replicated out
            np.testing.assert_allclose(g["layers"][name], r["layers"][name], rtol=STATS_RTOL,
                                       err_msg=f"step {r['step']} layers/{name}")
    step, p = params(run_dir)
    step_ref, p_ref = params(ref_dir)
    assert step == step_ref == 4 and p.keys() == p_ref.keys()
    for k in p_ref:
        np.testing.assert_allclose(p[k], p_ref[k], atol=PARAM_ATOL, rtol=0, err_msg=k)


def test_reference_trains(runs):
    out, _ = runs
    losses = [m["loss"] for m in read_metrics(out / "ref")]
    assert losses[-1] < losses[0] - 0.5  # the comparison below is between moving runs


@pytest.mark.parametrize("name", MESHES)
def test_mesh_matches_one_device(runs, name):
    out, result = runs
    assert result[name] == "done"
    assert_same_run(out / name, out / "ref")


def numbers(tree, path=""):
    """{path: float} of every number in a JSON tree."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in numbers(sub, f"{path}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{path}[{i}]").items()}
    is_number = isinstance(tree, (int, float)) and not isinstance(tree, bool)
    return {path: float(tree)} if is_number else {}


def test_diagnostics_of_a_mesh_trained_run(runs):
    """`jaxdepth analyze` on 8 devices of the run trained on mesh (2,2,2) matches the
    analysis of the one-device run (same measures, values within rtol 1e-3: forward passes
    of params that agree to PARAM_ATOL on weights of size ~0.02..1)."""
    out, result = runs
    assert result["analysis_devices"] == 8
    keys = ("angular_distance", "layer_removal", "logit_lens", "grad_persistence")
    got, ref = (read_json(out / run / "analysis" / "analysis.json") for run in ("mesh_2x2x2", "ref"))
    got, ref = numbers({k: got[k] for k in keys}), numbers({k: ref[k] for k in keys})
    assert got.keys() == ref.keys() and len(ref) > 20
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-3, atol=1e-6, err_msg=k)


def test_state_is_fully_sharded_over_fsdp(runs):
    """Mesh (2,4,1): every weight and Adam moment is split 4 ways (no full copy on any
    device); only scalars (step, counters, RNG key) are replicated."""
    _, result = runs
    leaves = result["shards"]
    assert any(".mu[" in p for p, *_ in leaves) and any(".nu[" in p for p, *_ in leaves)
    for path, size, shard in leaves:
        assert shard * (4 if size > 1 else 1) == size, (path, size, shard)


def test_mesh_errors_name_the_device_count(runs):
    out, result = runs
    too_many, not_dividing, width, batch = result["errors"]
    assert "multiply to 16" in too_many and "8 devices" in too_many
    assert "do not divide" in not_dividing and "8 devices" in not_dividing
    assert "size 36" in width and "8 ways" in width
    assert "data.batch_size (12)" in batch and "8 batch shards" in batch
    assert not (out / "bad" / "config.json").exists()  # rejected before the run dir is claimed


def test_reshard_on_restore(runs):
    """Saved at step 2 on 8 devices (data=2, fsdp=4), resumed on 4 devices (fsdp=4): the
    resumed run continues exactly as the uninterrupted one-device run."""
    out, result = runs
    assert result["reshard_first"] == "interrupted" and result["reshard"] == "done"
    run = out / "reshard"
    assert (run / "checkpoints" / "2" / "state").is_dir()
    assert read_json(run / "config.json")["parallel"]["data"] == 1  # the resumed mesh
    assert_same_run(run, out / "ref")
