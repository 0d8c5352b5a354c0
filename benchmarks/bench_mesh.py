"""Per-step time of the sharded train step on CPU meshes against one device, same global
batch: a sanity ratio (does the sharded step run at a sane cost?), not a speed claim. The
host devices are virtual (`--xla_force_host_platform_device_count`), so 8 of them share the
machine's cores and every collective is a memory copy.

    python benchmarks/bench_mesh.py [--config configs/tiny.yaml] [key=value ...]
        [--devices 8] [--meshes 8,1,1 2,4,1 2,2,2] [--steps 20] [--repeats 3]

Prints one row per mesh: median ms per step (over `--repeats` timed blocks of `--steps`
steps, after one compile-and-warm-up step) and the ratio to one device.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="dotted config overrides")
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--devices", type=int, default=8, help="host CPU devices to create")
    p.add_argument("--meshes", nargs="+", default=["8,1,1", "2,4,1", "2,2,2"],
                   help="data,fsdp,tensor sizes")
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per mesh")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # before jax is imported: this process gets `--devices` host devices
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import time

    import jax
    import numpy as np
    from tqdm.auto import tqdm

    from jaxdepth import parallel
    from jaxdepth.config import ParallelConfig, load_config
    from jaxdepth.data.tokenizers import ByteTokenizer
    from jaxdepth.train.build import build, resolve_model

    cfg = load_config(args.config, args.overrides)
    tok = ByteTokenizer()  # random byte tokens: the step's cost does not depend on the text
    mcfg = resolve_model(cfg.model, tok.vocab_size)
    B, S = cfg.data.batch_size, cfg.data.seq_len
    tokens = np.random.default_rng(0).integers(0, 256, (B, S + 1), dtype=np.int32)
    meshes = [(1, 1, 1)] + [tuple(int(x) for x in m.split(",")) for m in args.meshes]

    rows = []
    for shape in tqdm(meshes, desc="meshes", unit="mesh"):
        pcfg = ParallelConfig(*shape, rules=cfg.parallel.rules)
        n = int(np.prod(shape))
        mesh = parallel.make_mesh(pcfg, jax.devices()[:n])
        b = build(mcfg, cfg.train, pcfg, S, tok.pad_id, mesh)
        batch = parallel.global_batch({"tokens": tokens}, b.batch_sharding)
        state = b.init_state(jax.random.key(0))
        state, m = b.train_step(state, batch)  # compile + warm up
        jax.block_until_ready(m)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                state, m = b.train_step(state, batch)
            jax.block_until_ready((state, m))
            times.append((time.perf_counter() - t0) / args.steps)
        rows.append((shape, float(np.median(times)) * 1e3, float(m["loss"])))

    base = rows[0][1]
    print(f"model depth={mcfg.depth} width={mcfg.width}, global batch {B} x {S} tokens, "
          f"{jax.device_count()} host devices on {os.cpu_count()} cores, jax {jax.__version__}")
    print(f"{'mesh (data,fsdp,tensor)':>24} {'ms/step':>9} {'vs 1 device':>12} {'loss':>8}")
    for shape, ms, loss in rows:
        print(f"{shape!s:>24} {ms:9.2f} {ms / base:11.2f}x {loss:8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
