"""The per-device memory estimate (jaxdepth.memory): how its terms scale with the shape, the
mesh, remat and micro-batches; the one-line refusal; the plan's memory columns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jaxdepth import memory
from jaxdepth.config import ModelConfig, ParallelConfig, RunConfig, load_config, replace
from jaxdepth.errors import UserError
from jaxdepth.model import precision
from jaxdepth.sweep import shapes

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def run(**sections) -> RunConfig:
    base = dict(model=dict(depth=4, width=128, heads=4, vocab_size=320, dtype="float32",
                           attention="xla", remat="none"),
                data=dict(seq_len=256, batch_size=8))
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return replace(RunConfig(), **base)


def est(cfg: RunConfig, n_devices: int = 1, platform: str = "gpu") -> dict:
    return memory.estimate(cfg.model, cfg.train, cfg.data, cfg.parallel, n_devices, platform)


def test_terms_add_up_and_are_positive():
    e = est(run())
    assert e["total"] == sum(e[t] for t in memory.TERMS)
    assert all(e[t] > 0 for t in memory.TERMS)


def test_doubling_seq_len_quadruples_xla_attention_scores():
    for remat in ("none", "full", "dots_saveable"):
        a = est(run(model=dict(remat=remat)))
        b = est(run(model=dict(remat=remat), data=dict(seq_len=512)))
        assert b["attention_scores"] == pytest.approx(4 * a["attention_scores"], rel=1e-6)
        assert b["params"] == a["params"]
        # activations are linear in T: per-token arrays, plus (without remat) the fused
        # q/k/v and gate/up kernels every layer saves, whatever T (the tokens' own
        # int32 (B, T + 1) buffer leaves 4 B bytes over)
        m = run().model
        copies = m.depth * memory.fused_matrix_params(m) * 4 if remat == "none" else 0
        assert 2 * a["activations"] - b["activations"] == pytest.approx(
            copies + 4 * 8, abs=2)


def test_flash_kernels_have_no_attention_scores():
    for kernel in ("cudnn", "splash"):
        e = est(run(model=dict(dtype="bfloat16", attention=kernel)))
        assert e["attention_scores"] == 0


def test_fsdp_halves_params_and_optimizer_per_device():
    one = est(run())
    two = est(run(parallel=dict(data=1, fsdp=2)), n_devices=2)
    assert two["params"] == pytest.approx(one["params"] / 2, rel=1e-6)
    assert two["optimizer"] == pytest.approx(one["optimizer"] / 2, rel=1e-6)
    # data parallelism splits the batch, not the parameters
    dp = est(run(parallel=dict(data=2)), n_devices=2)
    assert dp["params"] == one["params"]
    assert dp["activations"] < 0.6 * one["activations"]


def test_rules_decide_what_is_sharded():
    # mlp over fsdp as well: the FFN matrices' embed axis already took fsdp, so no change
    # for them; replicating embed instead leaves every parameter whole on each device
    pc = ParallelConfig(data=1, fsdp=2, rules=(("embed", None),))
    cfg = dataclasses.replace(run(), parallel=pc)
    assert est(cfg, n_devices=2)["params"] == est(run())["params"]


def test_remat_shrinks_activations():
    acts = {r: est(run(model=dict(remat=r)))["activations"]
            for r in ("none", "dots_saveable", "dots_with_no_batch_dims_saveable", "full")}
    assert acts["full"] < acts["dots_with_no_batch_dims_saveable"] < acts["dots_saveable"]
    assert acts["dots_saveable"] < acts["none"]
    assert acts["full"] < acts["none"] / 2


def test_microbatches_divide_activations_and_add_an_accumulator():
    one = est(run())
    four = est(run(train=dict(microbatches=4)))
    for term in ("attention_scores", "logits"):
        assert four[term] == pytest.approx(one[term] / 4, rel=1e-3)
    # the fused kernels saved without remat are per layer, not per token: each micro-batch
    # saves them again (after the previous one freed them)
    m = run().model
    copies = m.depth * memory.fused_matrix_params(m) * 4
    assert four["activations"] - copies == pytest.approx((one["activations"] - copies) / 4,
                                                         rel=1e-3)
    # the float32 accumulator: one more parameter-sized float32 buffer
    assert four["optimizer"] == pytest.approx(one["optimizer"] + one["params"], rel=1e-6)


def test_bfloat16_compute_shrinks_activations_but_not_state():
    f32 = est(run(model=dict(remat="dots_saveable")))
    bf16 = est(run(model=dict(remat="dots_saveable", dtype="bfloat16")))
    assert bf16["params"] == f32["params"] and bf16["optimizer"] == f32["optimizer"]
    assert bf16["activations"] < f32["activations"]
    # bfloat16 parameters halve the parameters and Adam moments
    half = est(run(model=dict(param_dtype="bfloat16", dtype="bfloat16")))
    assert half["params"] == pytest.approx(f32["params"] / 2, rel=1e-6)
    # XLA:CPU computes bfloat16 matmuls in float32: activations counted as float32 there
    cpu = est(run(model=dict(remat="dots_saveable", dtype="bfloat16")), platform="cpu")
    assert cpu["activations"] == est(run(model=dict(remat="dots_saveable")),
                                     platform="cpu")["activations"]


@pytest.mark.parametrize("kw", [dict(), dict(ffn="gelu"), dict(tied_embeddings=False),
                                dict(norm="layernorm", width=96, heads=3), dict(kv_heads=2)])
def test_param_count_matches_the_model(kw):
    m = dataclasses.replace(ModelConfig(), **{**dict(depth=3, width=128, heads=4,
                                                     vocab_size=320), **kw})
    exact = shapes.exact_param_counts(m)[1]
    assert memory.param_count(m) == pytest.approx(exact, rel=0.01)


def test_unresolved_auto_is_resolved_for_the_platform():
    cfg = run(model=dict(dtype="auto", attention="auto"))
    assert est(cfg, platform="cpu")["total"] == est(
        run(model=dict(dtype="float32", attention="xla")), platform="cpu")["total"]
    # remat auto: dots_saveable on CPU, none elsewhere (what the model is built with)
    assert precision.remat_for("auto", "cpu") == "dots_saveable"
    assert precision.remat_for("auto", "gpu") == precision.remat_for("auto", "tpu") == "none"
    assert precision.remat_for("full", "cpu") == "full"
    auto = run(model=dict(remat="auto"))
    for platform, remat in (("cpu", "dots_saveable"), ("gpu", "none"), ("tpu", "none")):
        assert est(auto, platform=platform) == est(run(model=dict(remat=remat)),
                                                   platform=platform)
    # resolving remat alone leaves an explicit kernel unchecked for the platform (the
    # estimate plans for other machines)
    flash = run(model=dict(remat="auto", dtype="bfloat16", attention="splash"))
    assert est(flash, platform="gpu")["attention_scores"] == 0


def test_check_fits_is_one_line_naming_capacity_and_largest_term():
    e = est(run(data=dict(seq_len=4096)))
    memory.check_fits(e, None)  # unknown capacity: no check
    memory.check_fits(e, 10 * e["total"])
    with pytest.raises(UserError) as err:
        memory.check_fits(e, e["total"] // 2, what="run 'x'")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("run 'x' needs about")
    assert memory.human_bytes(e["total"] // 2) in msg
    assert "largest term is attention_scores" in msg and "seq_len" in msg
    # just over FIT_FRACTION of the capacity is refused, just under is not
    cap = int(e["total"] / memory.FIT_FRACTION)
    memory.check_fits(e, cap + 1)
    with pytest.raises(UserError):
        memory.check_fits(e, cap - 1000)


def test_tiny_with_a_100k_sequence_is_refused_on_24_gib():
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.seq_len=100000"])
    mcfg = precision.resolve(dataclasses.replace(cfg.model, vocab_size=320), "gpu", "")
    with pytest.raises(UserError, match="more than 90% of the device's 24GiB") as err:
        memory.check_run(cfg, mcfg, n_devices=1, capacity=24 * GiB)
    assert "\n" not in str(err.value) and "attention_scores" in str(err.value)
    ok = load_config(ROOT / "configs" / "tiny.yaml")
    e = memory.check_run(ok, dataclasses.replace(mcfg, vocab_size=320), n_devices=1,
                         capacity=24 * GiB)
    assert e["total"] < 100 * 2**20


def test_memory_check_can_be_switched_off(monkeypatch):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.seq_len=100000"])
    mcfg = precision.resolve(dataclasses.replace(cfg.model, vocab_size=320), "cpu", "")
    monkeypatch.setenv(memory.ENV_CHECK, "0")
    est = memory.check_run(cfg, mcfg, n_devices=1, capacity=24 * GiB)  # no error
    assert est["total"] > 24 * GiB


def test_device_memory_on_cpu_is_the_host_ram_share():
    import psutil

    cap = memory.device_memory_bytes()
    assert cap is not None and 0 < cap <= psutil.virtual_memory().total


@pytest.mark.parametrize("remat", ["none", "dots_saveable"])  # what `auto` picks
def test_estimate_within_25_percent_of_xla_accounting(remat):
    """A small compiled step on CPU: memory.estimate against memory_analysis() (argument +
    output - alias + temp); the benchmark does this at larger shapes against peak RSS."""
    import jax
    import jax.numpy as jnp

    from jaxdepth.train.build import build

    cfg = run(model=dict(depth=2, width=64, heads=4, vocab_size=256, remat=remat),
              data=dict(seq_len=128, batch_size=4))
    mcfg = precision.resolve(cfg.model, "cpu", "")
    b = build(mcfg, cfg.train, cfg.parallel, cfg.data.seq_len, 0)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         jax.eval_shape(b.init_state, jax.random.key(0)), b.state_shardings)
    tokens = jax.ShapeDtypeStruct((4, 129), jnp.int32, sharding=b.batch_sharding)
    ma = b.train_step.lower(state, {"tokens": tokens}).compile().memory_analysis()
    xla = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
           + ma.temp_size_in_bytes)
    # float32 everywhere; platform "gpu" leaves out the CPU-only YNNPACK buffers, which
    # memory_analysis() does not see (memory.CPU_HIDDEN_SCORES)
    assert 0.75 <= est(cfg, platform="gpu")["total"] / xla <= 1.25


# ---------------------------------------------------------------- the plan


def _row(run_id, total, fits):
    return dict(run_id=run_id, scheme="pre", depth=2, width=32, heads=2, lr=3e-3, seed=0,
                steps=10, tokens=1000, params=100, total_params=200, flops=1e9,
                mem_params=1024, mem_optimizer=2048, mem_activations=3 * 2**20,
                mem_total=total, mem_fits=fits, mem_capacity=8 * GiB, est_s=1.5,
                status="pending")


def test_plan_shows_memory_columns_and_marks_runs_that_do_not_fit():
    from jaxdepth.sweep.plan import format_plan

    out = format_plan([_row("small", 5 * 2**20, True), _row("huge", 20 * GiB, False)],
                      "calibration")
    lines = out.splitlines()
    assert "params/dev" in lines[0] and "opt/dev" in lines[0] and "total/dev" in lines[0]
    small = next(ln for ln in lines if ln.startswith("small"))
    huge = next(ln for ln in lines if ln.startswith("huge"))
    assert "5MiB" in small and "!" not in small
    assert "20GiB!" in huge
    assert float(huge.split()[-2]) == 1.5  # est_s stays second to last
    assert "1 run would be refused (huge)" in out and "8GiB" in out
    # rows without memory (older callers) still format, without the columns
    plain = [{k: v for k, v in _row("a", 1, True).items() if not k.startswith("mem_")}]
    assert "total/dev" not in format_plan(plain, "none")


def test_train_refuses_a_run_that_cannot_fit_before_compiling(tmp_path, capsys):
    """The issue's example: before, a JaxRuntimeError traceback from inside the step."""
    from jaxdepth.cli import main

    root = Path(__file__).resolve().parents[1]
    assert main(["train", str(root / "configs" / "tiny.yaml"), "data.seq_len=100000",
                 "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs about" in err and "attention_scores" in err
    assert not (tmp_path / "r" / "config.json").exists()  # refused: no run was started


def test_plan_for_another_machine(capsys):
    """`--devices/--device-memory/--platform` plan a pod's memory from this machine: on a
    1 MiB device every run is marked; on 4 devices params per device shrink."""
    from jaxdepth.cli import main

    spec = str(Path(__file__).resolve().parents[1] / "configs" / "sweep_tiny.yaml")
    base = ["sweep", spec, "--plan", "--no-calibrate", "--platform", "tpu"]
    assert main([*base, "--devices", "1", "--device-memory", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "!" in out and "would be refused" in out and "of one device's 1.0" in out
    assert main([*base, "--devices", "0"]) == 2
    assert "--devices must be >= 1" in capsys.readouterr().err
