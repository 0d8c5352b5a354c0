"""`jaxdepth bench` (jaxdepth/bench.py) and the shared peak-memory method (jaxdepth/peakmem.py):
argument parsing (override vs config path, a config file keeps its settings), the memory
branch per platform, the JSON written at a tiny shape, and bad input refused before anything
compiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import chex
import pytest

from jaxdepth import bench, peakmem
from jaxdepth.cli import main
from jaxdepth.config import load_config
from jaxdepth.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = str(ROOT / "configs" / "tiny.yaml")
TINY = ["model.width=32", "model.depth=2", "model.heads=2", "model.ffn_hidden=64",
        "data.seq_len=32", "data.batch_size=2"]


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_an_override_alone_is_not_a_config_path():
    p = bench.plan(_args("model.depth=3"))
    assert p.config_path is None and p.overrides == ("model.depth=3",)
    m = p.cfg.model  # the reference shape, with the override on top
    assert (m.depth, m.width, m.heads, m.ffn_hidden, m.tied_embeddings) == (3, 512, 8, 1365, False)
    assert (p.cfg.data.seq_len, p.cfg.data.batch_size, m.dtype) == (256, 8, "auto")


def test_a_config_file_without_overrides_keeps_its_settings():
    p = bench.plan(_args(TINY_YAML))
    assert p.config_path == TINY_YAML and p.overrides == ()
    assert p.cfg == load_config(TINY_YAML)
    assert bench.plan(_args(TINY_YAML, "model.depth=3")).cfg.model.depth == 3


def test_split_positionals():
    assert bench.split_positionals(None, []) == (None, [])
    assert bench.split_positionals("a=1", ["b=2"]) == (None, ["a=1", "b=2"])
    assert bench.split_positionals("x.yaml", ["b=2"]) == ("x.yaml", ["b=2"])
    with pytest.raises(UserError, match="'y.yaml' is not a key=value override"):
        bench.split_positionals("x.yaml", ["y.yaml"])


@pytest.mark.parametrize("platform, method", [("cpu", "rss"), ("gpu", "device_stats"),
                                              ("tpu", "device_stats")])
def test_memory_method_per_platform(platform, method):
    assert peakmem.memory_method(platform) == method


def test_matmul_peak_grows_n_to_the_cap(monkeypatch):
    monkeypatch.setattr(bench, "MATMUL_MIN_N", 16)
    monkeypatch.setitem(bench.MATMUL_MAX_N, "cpu", 64)  # tiny matmuls never take 50 ms
    r = bench.matmul_peak("float32", "cpu", repeats=2)
    assert (r["n"], r["dtype"]) == (64, "float32")
    chex.assert_trees_all_close(r["flops_per_s"], 2 * 64**3 / r["seconds"])
    assert bench.matmul_peak("float32", "cpu", n=32, repeats=1)["n"] == 32


@pytest.mark.parametrize("argv, message", [
    (["--only", "throughput,speed"], "--only: unknown 'speed'"),
    (["--remat", "none,sometimes"], "--remat: unknown 'sometimes'"),
    (["--compile-depths", "4,x"], "--compile-depths must be comma-separated integers"),
    (["--compile-depths", "0,4"], "--compile-depths: 0 must be >= 1"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["model.depth=2", "other.yaml"], "'other.yaml' is not a key=value override"),
    (["model.nope=2"], "model.nope"),
    (["missing.yaml"], "config file 'missing.yaml' not found"),
    (["--json", "/nonexistent/dir/b.json"], "its directory does not exist"),
])
def test_bad_input_is_one_line_before_anything_runs(argv, message, monkeypatch, capsys):
    def never(*a, **k):
        raise AssertionError("measured despite bad input")

    monkeypatch.setattr(bench, "time_steps", never)
    monkeypatch.setattr(peakmem, "measure_fresh", never)
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_json_at_a_tiny_shape(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--only", "throughput", "--steps", "2", "--matmul", "64",
                 "--json", str(out)]) == 0
    text = capsys.readouterr()
    assert "throughput:" in text.out and "[bench] throughput" in text.err
    res = json.loads(out.read_text())
    assert {"date", "jax", "platform", "device_kind", "config", "resolved",
            "throughput"} <= set(res)
    assert not {"memory", "stats", "remat", "compile"} & set(res)
    assert res["platform"] == "cpu" and res["resolved"]["dtype"] == "float32"
    assert res["config"]["model"]["width"] == 32 and res["config"]["data"]["seq_len"] == 32
    t = res["throughput"]
    assert t["matmul_peak"]["n"] == 64 and t["steps"] == 2 and t["devices"] == 1
    assert t["tokens_per_s"] == pytest.approx(2 * 32 / t["step_s"])
    assert t["fraction_of_matmul_peak"] == pytest.approx(
        t["model_flops_per_s"] / t["matmul_peak"]["flops_per_s"])


def test_every_other_section_with_stand_in_measurements(tmp_path, monkeypatch, capsys):
    """memory, stats, remat, compile: what each section measures and writes, with the
    measurements replaced (each is a compile or a subprocess; the throughput test above
    times real steps): the fresh-process ones run first, one per distinct config."""
    calls = []

    def time_steps(cfg, vocab, pad_id, steps):
        calls.append(("time", cfg.model.remat, cfg.train.layer_stats))
        s = 0.01 * (2 if cfg.model.remat == "full" else 1) * (1 if cfg.train.layer_stats else 0.5)
        return dict(step_s=s, first_step_s=1.0, steps=steps, tokens_per_s=64 / s,
                    flops_per_step=1e6, model_flops_per_s=1e6 / s, devices=1)

    def measure_fresh(cfg, vocab, pad_id, steps):
        assert not any(c[0] == "time" for c in calls)  # before this process runs anything
        calls.append(("memory", cfg.model.remat))
        mb = 2**20 * (1 if cfg.model.remat == "full" else 3)
        return dict(method="rss", measured=mb, upper_bound=False, xla=mb // 2, loss=5.0)

    monkeypatch.setattr(bench, "time_steps", time_steps)
    monkeypatch.setattr(peakmem, "measure_fresh", measure_fresh)
    monkeypatch.setattr(bench, "compile_seconds", lambda cfg, v, p, depth, scan: depth / 10)
    out = tmp_path / "bench.json"
    assert main(["bench", *TINY, "model.remat=none", "--only", "memory,stats,remat,compile",
                 "--json", str(out), "--remat", "none,full", "--compile-depths", "8,2,4",
                 "--unrolled-max-depth", "4"]) == 0
    assert calls == [("memory", "none"), ("memory", "full"), ("time", "none", True),
                     ("time", "none", False), ("time", "full", True)]
    text = capsys.readouterr().out
    assert "memory: 3MiB (peak RSS growth" in text and "off/on 0.50" in text
    assert "scan: depth 8 / depth 2 = 4.00x" in text
    res = json.loads(out.read_text())
    assert res["memory"]["measured"] == 3 * 2**20 and res["memory"]["xla"] == 3 * 2**19
    assert res["stats"]["off_over_on"] == pytest.approx(0.5)
    assert [(r["remat"], r["peak_bytes"], r["step_s"]) for r in res["remat"]] == [
        ("none", 3 * 2**20, 0.01), ("full", 2**20, 0.02)]
    assert res["compile"]["seconds"] == [dict(depth=2, scan=0.2, unrolled=0.2),
                                         dict(depth=4, scan=0.4, unrolled=0.4),
                                         dict(depth=8, scan=0.8, unrolled=None)]
    assert res["compile"]["scan_ratio"] == pytest.approx(4.0)
