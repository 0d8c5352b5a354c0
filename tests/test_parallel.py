"""Mesh sizes, logical axis rules and multi-host settings, in process (no devices needed:
shardings are checked on abstract meshes). The multi-device runs are in
tests/test_parallel_mesh.py and tests/test_parallel_multiprocess.py."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import flax.linen as nn
import jax
import pytest
from jax.sharding import AbstractMesh

from jaxdepth import parallel
from jaxdepth.cli import main
from jaxdepth.config import ModelConfig, ParallelConfig, RunConfig, load_config, to_dict
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer
from jaxdepth.model.schemes import SCHEMES
from jaxdepth.rundir import check_same_run, write_json
from jaxdepth.train.build import boxed_param_init

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def abstract_mesh(data, fsdp, tensor):
    return AbstractMesh((data, fsdp, tensor), parallel.MESH_AXES)


# ---------------------------------------------------------------- mesh sizes


@pytest.mark.parametrize("sizes, n, want", [
    ((-1, 1, 1), 8, (8, 1, 1)), ((2, -1, 1), 8, (2, 4, 1)), ((2, 2, -1), 8, (2, 2, 2)),
    ((1, 1, 1), 1, (1, 1, 1)), ((2, 4, 1), 8, (2, 4, 1))])
def test_mesh_shape_fills_one_axis(sizes, n, want):
    assert parallel.mesh_shape(ParallelConfig(*sizes), n) == want


@pytest.mark.parametrize("sizes, n, words", [
    ((2, 2, 4), 8, ["multiply to 16", "8 devices"]),  # more devices asked than exist
    ((2, 2, 1), 8, ["multiply to 4", "8 devices"]),  # product does not match
    ((3, -1, 1), 8, ["do not divide", "8 devices"]),
    ((-1, -1, 1), 8, ["at most one may be -1"]),
    ((0, 1, 1), 8, ["must be >= 1"])])
def test_mesh_shape_errors_name_the_device_count(sizes, n, words):
    with pytest.raises(UserError) as e:
        parallel.mesh_shape(ParallelConfig(*sizes), n)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_make_mesh_asks_for_more_devices_than_exist():
    n = jax.device_count()
    with pytest.raises(UserError, match=f"but the run has {n} device"):
        parallel.make_mesh(ParallelConfig(data=n + 1))


# ---------------------------------------------------------------- rules


MODELS = [{}, {"tied_embeddings": False}, {"ffn": "gelu", "norm": "layernorm"},
          {"scan_layers": False}] + [{"scheme": s} for s in sorted(SCHEMES) if s != "pre"]


def param_specs(**model):
    """{path: (shape, logical names, mesh axes per dim)} under the default rules."""
    mcfg = dataclasses.replace(ModelConfig(depth=2, width=32, heads=4, vocab_size=320), **model)
    _, boxed = boxed_param_init(Transformer(mcfg), 8)
    rules = parallel.rules(ParallelConfig())
    out = {}
    for path, box in jax.tree_util.tree_leaves_with_path(
            boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
        assert isinstance(box, nn.Partitioned), f"{path} carries no logical axis names"
        mesh_axes = nn.logical_to_mesh_axes(box.names, rules)
        out[jax.tree_util.keystr(path)] = (box.value.shape, box.names, tuple(mesh_axes))
    return out


@pytest.mark.parametrize("model", MODELS, ids=lambda m: ",".join(map(str, m.values())) or "default")
def test_default_rules_are_zero3_with_tensor_parallel_heads_and_ffn(model):
    specs = param_specs(**model)
    assert specs
    for path, (shape, names, axes) in specs.items():
        flat = [a for ax in axes for a in (ax if isinstance(ax, tuple) else (ax,))]
        per_layer = [d for d, n in zip(shape, names) if n != "layers"]
        if math.prod(per_layer) > 1:  # every weight, norm scale and gate vector
            assert "fsdp" in flat, (path, names, axes)
        for name, ax in zip(names, axes):
            if name == "layers":
                assert ax is None, path  # the scanned layer axis stays whole
            if name in ("heads", "mlp", "vocab"):
                assert ax == "tensor", (path, name, ax)
            if name == "embed":
                assert ax == "fsdp", (path, name, ax)
    assert any(n[0] == "layers" for _, n, _ in specs.values()) == model.get("scan_layers", True)


def test_batch_rule_is_data_and_fsdp():
    sh = parallel.batch_sharding(abstract_mesh(2, 2, 2), ParallelConfig())
    assert tuple(sh.spec) == (("data", "fsdp"), None)


def test_yaml_rules_override_one_mapping_and_keep_the_rest(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("parallel:\n  fsdp: 2\n  rules:\n    mlp: fsdp\n    embed: null\n")
    pcfg = load_config(path).parallel
    got = dict(parallel.rules(pcfg))
    assert got["mlp"] == "fsdp" and got["embed"] is None
    assert got["batch"] == ("data", "fsdp") and got["heads"] == "tensor"  # defaults kept
    parallel.check_rules(pcfg)
    mcfg = ModelConfig(depth=2, width=32, heads=4, vocab_size=320)
    _, boxed = boxed_param_init(Transformer(mcfg), 8)
    sh = parallel.logical_shardings(boxed, abstract_mesh(1, 2, 1), pcfg)
    assert tuple(sh["layers"]["ffn"]["up"]["kernel"].spec) == (None, None, "fsdp")


@pytest.mark.parametrize("rule", ["{mlp: fdsp}", "{batch: [data, data]}"])
def test_bad_rules_are_user_errors(tmp_path, rule):
    pcfg = load_config(None, [f"parallel.rules={rule}"]).parallel
    with pytest.raises(UserError, match="parallel.rules"):
        parallel.check_rules(pcfg)


def test_indivisible_sizes_are_user_errors():
    mcfg = ModelConfig(depth=2, width=36, heads=2, vocab_size=320)
    _, boxed = boxed_param_init(Transformer(mcfg), 8)
    with pytest.raises(UserError, match=r"'embed', size 36\) is sharded 8 ways over fsdp"):
        parallel.logical_shardings(boxed, abstract_mesh(1, 8, 1), ParallelConfig())
    with pytest.raises(UserError, match=r"'vocab', size 320\) is sharded 3 ways"):
        parallel.logical_shardings(boxed, abstract_mesh(1, 1, 3), ParallelConfig())
    sh = parallel.batch_sharding(abstract_mesh(2, 4, 1), ParallelConfig())
    with pytest.raises(UserError, match=r"data.batch_size \(12\).*8 batch shards"):
        parallel.check_batch(12, sh)
    parallel.check_batch(16, sh)


# ---------------------------------------------------------------- multi-host settings


def test_single_process_needs_no_initialisation():
    assert parallel.distributed_settings(env={}) is None
    assert parallel.maybe_initialize_distributed(env={}) is False
    assert parallel.distributed_settings("h:1", 1, 0, env={}) is None


def test_settings_from_flags_and_environment():
    env = {"JAXDEPTH_COORDINATOR": "10.0.0.1:1234", "JAXDEPTH_NUM_PROCESSES": "4",
           "JAXDEPTH_PROCESS_ID": "3"}
    assert parallel.distributed_settings(env=env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    # flags win over the environment
    assert parallel.distributed_settings("h:9", 2, 1, env=env) == {
        "coordinator_address": "h:9", "num_processes": 2, "process_id": 1}
    # auto-detection (TPU pods, SLURM): whatever is not given is left to jax
    assert parallel.distributed_settings(auto=True, env={}) == {
        "coordinator_address": None, "num_processes": None, "process_id": None}
    assert parallel.distributed_settings(env={"JAXDEPTH_DISTRIBUTED": "1"}) is not None


@pytest.mark.parametrize("kw, match", [
    ({"coordinator": "nohost"}, "HOST:PORT"),
    ({"coordinator": "h:1"}, "--num-processes N and --process-id I"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, r"in \[0, 2\)"),
    ({"num_processes": 2, "process_id": 1}, "need --coordinator"),
    ({"env": {"JAXDEPTH_NUM_PROCESSES": "two"}}, "JAXDEPTH_NUM_PROCESSES"),
])
def test_bad_settings_are_user_errors(kw, match):
    kw.setdefault("env", {})
    with pytest.raises(UserError, match=match):
        parallel.distributed_settings(**kw)


def test_train_cli_rejects_bad_coordinator_before_any_work(tmp_path, capsys):
    rc = main(["train", str(TINY), "--run-dir", str(tmp_path / "r"),
               "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"])
    assert rc == 2 and "HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- resuming on another mesh


def test_run_dir_accepts_a_new_mesh_but_not_a_new_model(tmp_path):
    cfg = RunConfig()
    write_json(tmp_path / "config.json", to_dict(cfg))
    check_same_run(tmp_path, to_dict(cfg))  # JSON round trip of the rules compares equal
    moved = dataclasses.replace(cfg, parallel=ParallelConfig(data=1, fsdp=4))
    check_same_run(tmp_path, to_dict(moved))
    deeper = dataclasses.replace(cfg, model=ModelConfig(depth=8))
    with pytest.raises(UserError, match="model.depth"):
        check_same_run(tmp_path, to_dict(deeper))
