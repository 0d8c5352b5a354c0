"""Training: bit-exact resume, divergence as a result, freezing, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_run

from jaxdepth import checkpoint
from jaxdepth.cli import main
from jaxdepth.rundir import read_metrics
from jaxdepth.train.loop import train

REPO = Path(__file__).resolve().parents[1]


def restored_params(run_dir):
    mngr = checkpoint.manager(run_dir, read_only=True)
    step = mngr.latest_step()
    out = mngr.restore(step, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))
    return step, out.state["params"]


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    cfg = tiny_run()
    full = train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", progress=False, stop_at=3)
    assert part["status"] == "interrupted" and part["step"] == 3
    resumed = train(cfg, tmp_path / "part", progress=False)
    assert full["status"] == resumed["status"] == "done"
    la = [(m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(tmp_path / "full")]
    lb = [(m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(tmp_path / "part")]
    assert la == lb and [s for s, *_ in la] == list(range(1, 7))
    sa, pa = restored_params(tmp_path / "full")
    sb, pb = restored_params(tmp_path / "part")
    assert sa == sb == 6
    jax.tree.map(np.testing.assert_array_equal, pa, pb)
    # a finished run is not re-run
    assert train(cfg, tmp_path / "full", progress=False)["wall_time_s"] == full["wall_time_s"]


def test_diverged_run_is_recorded_not_raised(tmp_path):
    cfg = tiny_run(train=dict(diverge_loss=1.0))  # any real loss is above 1 nat at step 1
    st = train(cfg, tmp_path / "d", progress=False)
    assert st["status"] == "diverged" and st["step"] == 1
    assert "above" in st["reason"]
    assert json.loads((tmp_path / "d" / "status.json").read_text())["status"] == "diverged"
    again = train(cfg, tmp_path / "d", progress=False)  # a diverged run is not re-run
    assert again["wall_time_s"] == st["wall_time_s"]


def test_other_config_in_same_run_dir_is_refused(tmp_path):
    from jaxdepth.errors import UserError

    train(tiny_run(train=dict(steps=1)), tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="differs in model.width"):
        train(tiny_run(train=dict(steps=1), model=dict(width=64)), tmp_path / "r", progress=False)


def test_train_last_layers_freezes_the_rest(tmp_path):
    cfg = tiny_run(train=dict(steps=2, train_last_layers=1, ckpt_every=2, weight_decay=0.1))
    from jaxdepth.data.pipeline import load_corpus
    from jaxdepth.train.build import build, resolve_model

    corpus = load_corpus(cfg.data)
    b = build(resolve_model(cfg.model, corpus.tokenizer.vocab_size), cfg.train, cfg.parallel,
              cfg.data.seq_len, corpus.tokenizer.pad_id)
    p0 = jax.device_get(b.init_state(jax.random.key(cfg.train.seed)).params)
    train(cfg, tmp_path / "f", progress=False)
    _, p1 = restored_params(tmp_path / "f")
    np.testing.assert_array_equal(p1["embed"]["embedding"], p0["embed"]["embedding"])
    q0, q1 = (p["layers"]["attn"]["query"]["kernel"] for p in (p0, p1))
    np.testing.assert_array_equal(q1[0], q0[0])  # first of two layers frozen
    assert not np.array_equal(q1[1], q0[1])  # last layer trains


def test_cli_train_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text((REPO / "configs" / "tiny.yaml").read_text())
    args = ["train", str(cfg), "train.steps=2", "train.warmup_steps=1", "train.log_every=1", "model.depth=2",
            "model.width=32", "model.heads=2", "data.seq_len=16", "data.batch_size=4",
            "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    assert "done: step 2" in capsys.readouterr().out
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "status.json", "tb", "checkpoints"):
        assert (run / name).exists(), name
    rec = read_metrics(run)[-1]
    assert rec["step"] == 2 and len(rec["layers"]["rms_out"]) == 2 and "val_loss" in rec


@pytest.mark.parametrize("overrides, words", [
    (["model.widht=64"], "unknown config key 'model.widht'"),
    (["model.width=30", "model.heads=4"], "must be divisible by model.heads"),
    (["model.depth=0"], "model.depth must be >= 1"),
    (["data.source=/no/such/dir"], "does not exist"),
    (["data.source={empty}"], "holds no text"),
    (["data.source={short}"], "shorter than one sequence"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, overrides, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "short.txt").write_text("a few words")
    overrides = [o.format(empty=tmp_path / "empty", short=tmp_path / "short.txt")
                 for o in overrides]
    code = main(["train", str(REPO / "configs" / "tiny.yaml"), *overrides,
                 f"data.cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing compiled or trained


def test_console_script_reports_errors_without_traceback(tmp_path):
    env = {**os.environ, "JAXDEPTH_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "jaxdepth.cli", "train",
                        str(REPO / "configs" / "tiny.yaml"), "model.heads=5"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "model.heads (5)" in r.stderr


def test_truncate_metrics_drops_later_and_cut_lines(tmp_path):
    from jaxdepth.rundir import truncate_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    truncate_metrics(tmp_path, 2)
    assert p.read_text() == '{"step": 1}\n{"step": 2}\n'
