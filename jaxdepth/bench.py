"""`jaxdepth bench [CONFIG] [k=v ...]`: what one train step of a config costs on this machine.

The shape is the config's (a YAML file and/or dotted overrides); with no config file it is
the built-in reference shape `DEFAULT_OVERRIDES` (width 512, depth 8, heads 8, FFN 1365,
untied embeddings, 8 x 256 tokens), which overrides change. `model.dtype: auto` computes in
float32 on CPU and bfloat16 on GPU/TPU. The data are random tokens; the vocabulary is
`model.vocab_size` or the tokenizer's (the byte tokenizer's 258, rounded up to 320).

Sections (`--only`, default all; each prints when done, a progress line each on stderr):

- throughput: `step_s` = median seconds of `--steps` timed train steps after 2 warmup steps
  (the first compiles: `first_step_s`); tokens/s = batch x seq_len / step_s; model FLOP/s =
  `step_flops` / step_s (the FLOPs the model needs: remat's recomputation is not counted),
  and its fraction of the matmul peak: the best FLOP/s of an n x n matmul in the run's
  compute dtype on one device, measured in this process just before (`matmul_peak`), times
  the devices the step runs on. A ratio measured in one process, so it means something on
  a shared, noisy machine, where absolute numbers do not.
- memory: peak memory of 2 train steps measured in a fresh process (`jaxdepth.peakmem`:
  peak RSS growth on CPU, the allocator's peak on GPU/TPU), and XLA's own total for the
  compiled step (`memory_analysis()`: argument + output - alias + temp) as a cross-check.
- stats: step time with the per-layer statistics (`train.layer_stats`) on and off; off/on.
- remat: step time and peak memory (as above) for each `model.remat` policy in `--remat`.
- compile: seconds to lower and compile the train step against depth, for the scanned stack
  (`model.scan_layers`) at `--compile-depths` and the unrolled one at those up to
  `--unrolled-max-depth` (its compile time grows linearly); scan's ratio at the largest over
  the smallest depth says whether compile time is independent of depth.

The fresh-process measurements (memory, remat) run first, before this process opens the
accelerator, which the subprocess needs to itself (a TPU opens in one process only).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SECTIONS = ("throughput", "memory", "stats", "remat", "compile")
# the reference shape, used when no config file is given (overrides apply on top)
DEFAULT_OVERRIDES = ("model.width=512", "model.depth=8", "model.heads=8", "model.ffn_hidden=1365",
                     "model.tied_embeddings=false", "data.seq_len=256", "data.batch_size=8")
WARMUP_STEPS = 2
MEMORY_STEPS = 2
# the peak matmul's n grows from MATMUL_MIN_N by 2x until one matmul takes MATMUL_TARGET_S
MATMUL_MIN_N, MATMUL_TARGET_S, MATMUL_REPEATS = 1024, 0.05, 5
MATMUL_MAX_N = {"cpu": 8192}  # any other platform: MATMUL_MAX_N_ACCELERATOR
MATMUL_MAX_N_ACCELERATOR = 16384


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="run config YAML (default: the built-in reference shape); an argument "
                        "with '=' is an override instead")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=16")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    p.add_argument("--steps", type=int, default=20,
                   help=f"timed train steps per configuration, after {WARMUP_STEPS} warmup steps")
    p.add_argument("--matmul", type=int, default=None,
                   help="n of the n x n peak matmul (default: doubled from "
                        f"{MATMUL_MIN_N} until one takes >= {MATMUL_TARGET_S * 1e3:.0f} ms)")
    p.add_argument("--remat", default="none,dots_saveable,full",
                   help="model.remat policies (default none,dots_saveable,full)")
    p.add_argument("--compile-depths", default="4,16,64",
                   help="depths of the compile-time table (default 4,16,64)")
    p.add_argument("--unrolled-max-depth", type=int, default=16,
                   help="compile the unrolled stack only up to this depth (default 16)")
    p.add_argument("--json", help="also write every number (and the setup) to this file")


# ---------------------------------------------------------------- arguments


@dataclass(frozen=True)
class Plan:
    """A checked `jaxdepth bench` command line."""

    cfg: object  # RunConfig
    config_path: str | None
    overrides: tuple[str, ...]
    sections: tuple[str, ...]
    remats: tuple[str, ...]
    depths: tuple[int, ...]
    unrolled_max_depth: int
    steps: int
    matmul: int | None
    json: str | None


def split_positionals(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """(config path or None, overrides) from the positionals: an argument with '=' (that is
    not an existing file) is an override; only the first may be the config path."""
    from jaxdepth.errors import UserError

    def is_override(a: str) -> bool:
        return "=" in a and not Path(a).is_file()

    items, path = ([config] if config is not None else []) + list(overrides), None
    if items and not is_override(items[0]):
        path, items = items[0], items[1:]
    bad = [a for a in items if not is_override(a)]
    if bad:
        raise UserError(f"'{bad[0]}' is not a key=value override (only the first argument may "
                        "be a config file)")
    return path, items


def bench_config(path: str | None, overrides: list[str]):
    """The config benchmarked: the file's settings with the overrides, or, with no file, the
    reference shape `DEFAULT_OVERRIDES` with the overrides on top."""
    from jaxdepth.config import load_config

    if path is None:
        return load_config(None, [*DEFAULT_OVERRIDES, *overrides])
    return load_config(path, overrides)


def parse_list(text: str, what: str, valid=None, cast=str) -> tuple:
    """A comma-separated option value, each item cast and (if `valid`) one of `valid`."""
    from jaxdepth.errors import UserError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--{what} is empty")
    try:
        items = [cast(t) for t in items]
    except ValueError:
        raise UserError(f"--{what} must be comma-separated integers, got '{text}'") from None
    for t in items:
        if valid is not None and t not in valid:
            raise UserError(f"--{what}: unknown '{t}'; expected some of {', '.join(valid)}")
        if cast is int and t < 1:
            raise UserError(f"--{what}: {t} must be >= 1")
    return tuple(items)


def plan(args) -> Plan:
    """Every argument checked (a UserError for bad input) before anything compiles."""
    from jaxdepth.config import REMAT_POLICIES
    from jaxdepth.errors import UserError

    path, overrides = split_positionals(args.config, args.overrides or [])
    for flag in ("steps", "unrolled_max_depth", "matmul"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    if args.json and "://" not in args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: its directory does not exist")
    return Plan(cfg=bench_config(path, overrides), config_path=path, overrides=tuple(overrides),
                sections=parse_list(args.only, "only", SECTIONS),
                remats=parse_list(args.remat, "remat", REMAT_POLICIES),
                depths=tuple(sorted(set(parse_list(args.compile_depths, "compile-depths",
                                                   cast=int)))),
                unrolled_max_depth=args.unrolled_max_depth, steps=args.steps,
                matmul=args.matmul, json=args.json)


def tokenizer_vocab(cfg) -> tuple[int, int]:
    """(tokenizer vocabulary, pad id) for building the step: `model.vocab_size` when set,
    the byte tokenizer's without loading anything, else the configured corpus's tokenizer."""
    from jaxdepth.data.tokenizers import ByteTokenizer

    if cfg.model.vocab_size:
        vocab = cfg.model.vocab_size
    elif cfg.data.tokenizer == "byte":
        vocab = ByteTokenizer.vocab_size
    else:
        from jaxdepth.data.pipeline import load_corpus

        vocab = load_corpus(cfg.data).tokenizer.vocab_size
    return vocab, vocab - 1


# ---------------------------------------------------------------- measurements


def step_flops(mcfg, seq_len: int, non_embedding_params: int, tokens: int) -> float:
    """Training FLOPs of `tokens` tokens: `jaxdepth.sweep.shapes.model_train_flops` (6 N T
    plus the causal attention map, less the tokens Mixture-of-Depths layers skip, plus
    DenseFormer's weighted sums) plus the unembedding matmul 6 W V per token, which the
    scaling-law count leaves out but the step does."""
    from jaxdepth.sweep.shapes import model_train_flops

    return (model_train_flops(mcfg, non_embedding_params, tokens, seq_len)
            + 6.0 * mcfg.width * mcfg.vocab_size * tokens)


def matmul_peak(dtype: str, platform: str, n: int | None = None,
                repeats: int = MATMUL_REPEATS) -> dict:
    """The best FLOP/s (2 n^3 per matmul) of an n x n by n x n matmul in `dtype`, best of
    `repeats` timed runs. Without `n`, n doubles from MATMUL_MIN_N until one matmul takes
    >= MATMUL_TARGET_S (so that timer and dispatch overheads do not count) or reaches
    MATMUL_MAX_N (8192 on CPU, 16384 on accelerators)."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(jnp.matmul)

    def operands(n):
        ka, kb = jax.random.split(jax.random.key(0))
        return (jax.random.normal(ka, (n, n), dtype), jax.random.normal(kb, (n, n), dtype))

    def seconds(a, b) -> float:
        t = time.perf_counter()
        f(a, b).block_until_ready()
        return time.perf_counter() - t

    grow = n is None
    n = n or MATMUL_MIN_N
    cap = MATMUL_MAX_N.get(platform, MATMUL_MAX_N_ACCELERATOR)
    while True:
        a, b = operands(n)
        seconds(a, b)  # compile
        if not grow or n >= cap or seconds(a, b) >= MATMUL_TARGET_S:
            break
        n *= 2
    best = min(seconds(a, b) for _ in range(repeats))
    return dict(n=n, dtype=dtype, repeats=repeats, seconds=best, flops_per_s=2 * n**3 / best)


def time_steps(cfg, vocab: int, pad_id: int, steps: int) -> dict:
    """Train-step timing of `cfg` on random tokens: `step_s` (median of `steps` timed steps
    after WARMUP_STEPS), `first_step_s` (compile + one step), tokens/s, model FLOP/s (of
    all `devices` of the mesh together)."""
    import jax
    import numpy as np

    from jaxdepth import parallel
    from jaxdepth.model import count_params
    from jaxdepth.train.build import build, resolve_model

    mcfg = resolve_model(cfg.model, vocab)
    B, T = cfg.data.batch_size, cfg.data.seq_len
    b = build(mcfg, cfg.train, cfg.parallel, T, pad_id)
    state = b.init_state(jax.random.key(0))
    tokens = np.random.default_rng(0).integers(0, pad_id, (B, T + 1), dtype=np.int32)
    batch = parallel.global_batch({"tokens": tokens}, b.batch_sharding)
    times = []
    for _ in range(WARMUP_STEPS + steps):
        t = time.perf_counter()
        state, m = b.train_step(state, batch)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times[WARMUP_STEPS:]))
    flops = step_flops(mcfg, T, count_params(state.params, non_embedding=True), B * T)
    return dict(step_s=step_s, first_step_s=times[0], steps=steps, tokens_per_s=B * T / step_s,
                flops_per_step=flops, model_flops_per_s=flops / step_s, devices=b.mesh.size)


def compile_seconds(cfg, vocab: int, pad_id: int, depth: int, scan: bool) -> float:
    """Seconds to lower and compile the train step of `cfg` at `depth`, scanned or unrolled
    (abstract inputs: nothing is allocated)."""
    import jax
    import jax.numpy as jnp

    from jaxdepth.config import replace
    from jaxdepth.train.build import build, resolve_model

    c = replace(cfg, model=dict(depth=depth, scan_layers=scan))
    b = build(resolve_model(c.model, vocab), c.train, c.parallel, c.data.seq_len, pad_id)
    state = jax.eval_shape(b.init_state, jax.random.key(0))
    batch = {"tokens": jax.ShapeDtypeStruct((c.data.batch_size, c.data.seq_len + 1), jnp.int32)}
    t = time.perf_counter()
    b.train_step.lower(state, batch).compile()
    return time.perf_counter() - t


# ---------------------------------------------------------------- the command


def _progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(args) -> int:
    p = plan(args)  # every UserError before anything compiles
    from jaxdepth.config import replace
    from jaxdepth.peakmem import measure_fresh

    vocab, pad_id = tokenizer_vocab(p.cfg)
    remat_cfgs = ({r: replace(p.cfg, model=dict(remat=r)) for r in p.remats}
                  if "remat" in p.sections else {})
    peaks: dict = {}  # config -> peakmem result; fresh processes before this one opens a device
    mem_cfgs = ([p.cfg] if "memory" in p.sections else []) + list(remat_cfgs.values())
    for i, c in enumerate(dict.fromkeys(mem_cfgs)):
        _progress(f"peak memory in a fresh process ({i + 1}/{len(set(mem_cfgs))}: "
                  f"remat {c.model.remat})")
        peaks[c] = measure_fresh(c, vocab, pad_id, MEMORY_STEPS)

    import jax

    from jaxdepth.config import to_dict
    from jaxdepth.memory import human_bytes as hb
    from jaxdepth.model import precision
    from jaxdepth.rundir import jsonable, write_json
    from jaxdepth.tables import table
    from jaxdepth.train.build import resolve_model

    platform, kind = precision.backend()
    mcfg = resolve_model(p.cfg.model, vocab)
    m, d = mcfg, p.cfg.data
    res = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               jax=jax.__version__, platform=platform, device_kind=kind,
               device_count=jax.device_count(), config_path=p.config_path,
               overrides=list(p.overrides), config=to_dict(p.cfg),
               resolved=dict(dtype=m.dtype, attention=m.attention, remat=m.remat,
                             vocab_size=m.vocab_size))
    print(f"device: {kind} ({platform}, {jax.device_count()} device(s), jax {jax.__version__})")
    print(f"model: depth {m.depth}, width {m.width}, heads {m.heads}, ffn {m.ffn_hidden_size}, "
          f"vocab {m.vocab_size}, {m.dtype}, attention {m.attention}, remat {m.remat}; "
          f"batch {d.batch_size} x {d.seq_len} tokens")
    timed: dict = {}  # config -> time_steps result

    def timing(c) -> dict:
        if c not in timed:
            timed[c] = time_steps(c, vocab, pad_id, p.steps)
        return timed[c]

    if "throughput" in p.sections:
        _progress(f"throughput: matmul peak, then {WARMUP_STEPS}+{p.steps} train steps")
        peak = matmul_peak(m.dtype, platform, p.matmul)
        t = timing(p.cfg)
        res["throughput"] = dict(**t, matmul_peak=peak,  # the matmul ran on one device
                                 fraction_of_matmul_peak=t["model_flops_per_s"]
                                 / (peak["flops_per_s"] * t["devices"]))
        print(f"throughput: {t['step_s'] * 1e3:.1f} ms/step (median of {p.steps}; first step "
              f"{t['first_step_s']:.2f} s with compile), {t['tokens_per_s']:.0f} tokens/s, "
              f"model {t['model_flops_per_s'] / 1e9:.2f} GFLOP/s = "
              f"{res['throughput']['fraction_of_matmul_peak']:.2f} of the {peak['dtype']} "
              f"matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s (n={peak['n']}, best of "
              f"{peak['repeats']}{'' if t['devices'] == 1 else ', per device'})")
    if "memory" in p.sections:
        r = res["memory"] = dict(**peaks[p.cfg], steps=MEMORY_STEPS)
        what = {"rss": "peak RSS growth", "device_stats": "device peak_bytes_in_use growth"}
        measured = "-" if r["measured"] is None else hb(r["measured"])
        print(f"memory: {measured}{' (upper bound)' if r['upper_bound'] else ''} "
              f"({what[r['method']]}, {MEMORY_STEPS} steps in a fresh process); "
              f"XLA memory_analysis {hb(r['xla'])}")
    if "stats" in p.sections:
        _progress("stats: train steps with train.layer_stats on and off")
        on, off = (timing(replace(p.cfg, train=dict(layer_stats=v))) for v in (True, False))
        res["stats"] = dict(on=on, off=off, off_over_on=off["step_s"] / on["step_s"])
        print(f"layer stats: on {on['step_s'] * 1e3:.1f} ms/step, off "
              f"{off['step_s'] * 1e3:.1f} ms/step: off/on {res['stats']['off_over_on']:.2f}")
    if "remat" in p.sections:
        _progress(f"remat: train steps under {', '.join(p.remats)}")
        rows = [dict(remat=r, **timing(c), peak_bytes=peaks[c]["measured"],
                     upper_bound=peaks[c]["upper_bound"], xla_bytes=peaks[c]["xla"])
                for r, c in remat_cfgs.items()]
        res["remat"] = rows
        print("remat policies:")
        print(table([dict(r, ms=r["step_s"] * 1e3) for r in rows],
                    ["remat", "ms", "tokens_per_s", "peak_bytes", "xla_bytes"],
                    {"remat": str, "ms": ".1f", "tokens_per_s": ".0f",
                     "peak_bytes": lambda v: "-" if v is None else hb(v), "xla_bytes": hb},
                    style="text", headers={"ms": "ms/step", "tokens_per_s": "tokens/s",
                                           "peak_bytes": "peak", "xla_bytes": "xla"}))
    if "compile" in p.sections:
        _progress(f"compile: depths {','.join(map(str, p.depths))} (unrolled up to "
                  f"{p.unrolled_max_depth})")
        rows = [dict(depth=dep, scan=compile_seconds(p.cfg, vocab, pad_id, dep, True),
                     unrolled=(compile_seconds(p.cfg, vocab, pad_id, dep, False)
                               if dep <= p.unrolled_max_depth else None))
                for dep in p.depths]
        ratio = rows[-1]["scan"] / rows[0]["scan"]
        res["compile"] = dict(seconds=rows, scan_ratio=ratio,
                              cache_dir=jax.config.jax_compilation_cache_dir)
        print("compile seconds by depth:")
        print(table(rows, ["depth", "scan", "unrolled"], {"scan": ".2f", "unrolled": ".2f"},
                    style="text"))
        print(f"scan: depth {p.depths[-1]} / depth {p.depths[0]} = {ratio:.2f}x"
              + (" (a persistent compilation cache is on: these may be cache reads)"
                 if res["compile"]["cache_dir"] else ""))
    if p.json:
        write_json(p.json, jsonable(res))
    return 0
