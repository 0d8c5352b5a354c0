"""Driver for the multi-device tests, run in a subprocess so that the device count
(XLA_FLAGS=--xla_force_host_platform_device_count=N) is set before jax is imported.

    python tests/_mesh_driver.py meshes OUT      # 8 devices: meshes vs 1 device, reshard
    python tests/_mesh_driver.py single OUT PAIR # 1 device: reference, resume PAIR's run

Each run directory gets `params.npz` (final params restored onto one device); the test
compares those and the runs' metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from jaxdepth import checkpoint, parallel
from jaxdepth.config import load_config
from jaxdepth.data.pipeline import load_corpus
from jaxdepth.errors import UserError
from jaxdepth.train.build import build, resolve_model
from jaxdepth.train.loop import train

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
# Tiny and deterministic; a constant lr (no warmup, cosine to 1.0 * lr) so that a run
# extended from 3 to 6 steps follows the same schedule as a 6-step run.
OVERRIDES = ["model.width=32", "model.depth=2", "model.heads=4", "data.seq_len=32",
             "data.batch_size=16", "train.lr=0.01", "train.warmup_steps=0",
             "train.min_lr_ratio=1.0", "train.log_every=1", "train.eval_every=0",
             "train.eval_batches=1", "train.ckpt_every=2"]


def config(steps: int, mesh=(1, 1, 1), extra=()):
    d, f, t = mesh
    return load_config(TINY, OVERRIDES + [f"train.steps={steps}", f"parallel.data={d}",
                                          f"parallel.fsdp={f}", f"parallel.tensor={t}", *extra])


def one_device():
    return parallel.make_mesh(config(1).parallel, jax.devices()[:1])


def save_params(steps: int, run_dir: Path) -> None:
    """Restore the newest checkpoint of `run_dir` onto one device and save its params."""
    one = config(steps)
    tok = load_corpus(one.data).tokenizer
    b = build(resolve_model(one.model, tok.vocab_size), one.train, one.parallel,
              one.data.seq_len, tok.pad_id, one_device())
    abstract = checkpoint.abstract_like(jax.eval_shape(b.init_state, jax.random.key(0)),
                                        b.state_shardings)
    mngr = checkpoint.manager(run_dir, read_only=True)
    step, state, _ = checkpoint.restore(mngr, abstract)
    mngr.close()
    flat = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
    np.savez(run_dir / "params.npz", step=step, **flat)


def analyze_on_all_devices(run_dirs) -> int:
    """`jaxdepth analyze` of each run (RUN/analysis/analysis.json), restored onto a
    data-parallel mesh of all the devices; returns how many devices that mesh had."""
    from jaxdepth.diagnostics.run_analysis import analyze_run

    for run_dir in run_dirs:
        analyze_run(run_dir)
    return jax.device_count()


def shard_sizes(cfg) -> list:
    """(path, global size, largest per-device shard size) of every leaf of the initial
    state built on all devices: ZeRO-3 means no device holds a whole weight or moment."""
    tok = load_corpus(cfg.data).tokenizer
    b = build(resolve_model(cfg.model, tok.vocab_size), cfg.train, cfg.parallel,
              cfg.data.seq_len, tok.pad_id, None)  # the build train() used (cached)
    state = b.init_state(jax.random.key(0))
    return [(jax.tree_util.keystr(p), x.size, max(s.data.size for s in x.addressable_shards))
            for p, x in jax.tree_util.tree_leaves_with_path(state)]


def mesh_errors(out: Path) -> list:
    """UserError messages for meshes the 8 devices cannot hold, and for sizes they do not
    divide; raised before anything compiles."""
    msgs = []
    for cfg in (config(1, (16, 1, 1)), config(1, (3, -1, 1)),
                config(1, (1, 8, 1), ["model.width=36", "model.heads=2"]),
                config(1, (8, 1, 1), ["data.batch_size=12"])):
        try:
            train(cfg, out / "bad", progress=False)
            msgs.append(None)
        except UserError as e:
            msgs.append(str(e))
    return msgs


def meshes(out: Path) -> dict:
    assert jax.device_count() == 8, jax.device_count()
    steps = 4
    runs = {}
    ref = config(steps)
    train(ref, out / "ref", progress=False, mesh=one_device())
    save_params(steps, out / "ref")
    for shape in ((8, 1, 1), (2, 4, 1), (2, 2, 2)):
        name = "mesh_" + "x".join(map(str, shape))
        cfg = config(steps, shape)
        runs[name] = train(cfg, out / name, progress=False)["status"]
        save_params(steps, out / name)
    runs["analysis_devices"] = analyze_on_all_devices([out / "ref", out / "mesh_2x2x2"])
    runs["shards"] = shard_sizes(config(steps, (2, 4, 1)))
    runs["errors"] = mesh_errors(out)
    # Reshard on restore: saved on 8 devices as data=2,fsdp=4, resumed on 4 as fsdp=4.
    runs["reshard_first"] = train(config(steps, (2, 4, 1)), out / "reshard", progress=False,
                                  stop_at=2)["status"]
    four = config(steps, (1, 4, 1))
    runs["reshard"] = train(four, out / "reshard", progress=False,
                            mesh=parallel.make_mesh(four.parallel, jax.devices()[:4]))["status"]
    save_params(steps, out / "reshard")
    return runs


def single(out: Path, pair_dir: Path) -> dict:
    """The reference for a 2-process run of 3 steps, and that run resumed here to 6 steps."""
    assert jax.process_count() == 1
    ref = config(6)
    train(ref, out / "ref", progress=False, mesh=one_device())
    save_params(6, out / "ref")
    saved = sorted(p.name for p in (pair_dir / "checkpoints" / "2" / "data").iterdir())
    status = train(ref, pair_dir, progress=False, mesh=one_device())
    save_params(6, pair_dir)
    return {"pair_data_files": saved, "resumed": status["status"]}


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    result = meshes(out) if mode == "meshes" else single(out, Path(sys.argv[3]))
    print("RESULT " + json.dumps(result))
