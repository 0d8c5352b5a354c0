"""`jaxdepth bench`: train-step throughput as a fraction of this machine's matmul peak,
and compile time against depth for the scanned and the unrolled stack.

Both numbers are ratios measured in one process, so they mean something on a shared,
noisy machine: model FLOP/s over the best dense-matmul FLOP/s measured just before, and
compile seconds at depth D over compile seconds at the smallest depth.
"""

from __future__ import annotations

import argparse
import time

DEPTHS = (2, 8, 32)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="run config YAML (default: built-in)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=8")
    p.add_argument("--steps", type=int, default=20, help="timed train steps")
    p.add_argument("--matmul", type=int, default=1024, help="size n of the n x n peak matmul")
    p.add_argument("--compile-depths", default=",".join(map(str, DEPTHS)))
    p.add_argument("--json", help="also write the results here")


def step_flops(mcfg, seq_len: int, non_embedding_params: int, tokens: int) -> float:
    """Training FLOPs of `tokens` tokens: `jaxdepth.sweep.shapes.train_flops` (6 N T plus the
    causal attention map) plus the unembedding matmul 6 W V per token, which the scaling-law
    count leaves out but the step does."""
    from jaxdepth.sweep.shapes import train_flops

    return (train_flops(non_embedding_params, tokens, mcfg.depth, seq_len, mcfg.width)
            + 6.0 * mcfg.width * mcfg.vocab_size * tokens)


def matmul_peak(n: int, repeats: int = 10) -> float:
    """Best observed float32 FLOP/s of an n x n matmul (2 n^3 FLOPs)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def time_train(cfg, steps: int) -> dict:
    import jax
    import numpy as np

    from jaxdepth import parallel
    from jaxdepth.model import count_params
    from jaxdepth.train.build import build, resolve_model

    mcfg = resolve_model(cfg.model, 258)
    b = build(mcfg, cfg.train, cfg.parallel, cfg.data.seq_len, 257)
    state = b.init_state(jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (cfg.data.batch_size, cfg.data.seq_len + 1), dtype=np.int32)
    batch = parallel.global_batch({"tokens": tokens}, b.batch_sharding)
    t = time.perf_counter()
    state, m = b.train_step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = b.train_step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    flops = step_flops(mcfg, cfg.data.seq_len, count_params(state.params, True),
                       tokens_per_step)
    return dict(first_step_s=compile_s, step_s=step_s, tokens_per_s=tokens_per_step / step_s,
                model_flops_per_s=flops / step_s)


def compile_seconds(cfg, depth: int, scan: bool) -> float:
    """Seconds to lower and compile the train step at `depth`."""
    import jax
    import jax.numpy as jnp

    from jaxdepth.config import replace
    from jaxdepth.train.build import build, resolve_model

    c = replace(cfg, model=dict(depth=depth, scan_layers=scan))
    b = build(resolve_model(c.model, 258), c.train, c.parallel, c.data.seq_len, 257)
    state = jax.eval_shape(b.init_state, jax.random.key(0))
    batch = {"tokens": jax.ShapeDtypeStruct((c.data.batch_size, c.data.seq_len + 1), jnp.int32)}
    t = time.perf_counter()
    b.train_step.lower(state, batch).compile()
    return time.perf_counter() - t


def run(args) -> int:
    from jaxdepth.config import load_config
    from jaxdepth.errors import UserError

    cfg = load_config(args.config, args.overrides or [
        "model.depth=4", "model.width=128", "model.heads=4", "data.seq_len=128",
        "data.batch_size=16"])
    try:
        depths = [int(d) for d in args.compile_depths.split(",")]
    except ValueError:
        raise UserError(f"--compile-depths '{args.compile_depths}' must be integers") from None
    import jax

    from jaxdepth.rundir import jsonable, write_json
    from jaxdepth.tables import table

    peak = matmul_peak(args.matmul)
    res = {"device": str(jax.devices()[0].device_kind), "matmul_peak_flops": peak,
           **time_train(cfg, args.steps)}
    res["fraction_of_matmul_peak"] = res["model_flops_per_s"] / peak
    m = cfg.model
    print(f"device {res['device']}: matmul peak {peak / 1e9:.1f} GFLOP/s (n={args.matmul})")
    print(f"train step (depth {m.depth}, width {m.width}, batch {cfg.data.batch_size} x "
          f"{cfg.data.seq_len}): {res['step_s'] * 1e3:.1f} ms, {res['tokens_per_s']:.0f} tok/s, "
          f"{res['model_flops_per_s'] / 1e9:.1f} GFLOP/s = "
          f"{res['fraction_of_matmul_peak']:.2f} of matmul peak")
    res["compile_s"] = {d: {"scan": compile_seconds(cfg, d, True),
                            "unrolled": compile_seconds(cfg, d, False)} for d in depths}
    print("compile seconds by depth:")
    print(table([{"depth": d, **c} for d, c in res["compile_s"].items()],
                ["depth", "scan", "unrolled"], {"scan": ".2f", "unrolled": ".2f"}, style="text"))
    if args.json:
        write_json(args.json, jsonable(res))
    return 0
