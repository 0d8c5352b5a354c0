"""jaxdepth's train step against the PyTorch reference at the same shapes: tokens/s of each,
their ratio, and each side's model FLOP/s as a fraction of its own dense-matmul peak.

    pip install -e '.[bench]'
    python benchmarks/vs_torch.py [--width 512] [--depth 8] [--heads 8] [--ffn 1365]
        [--seq 256] [--batch 8] [--vocab 320] [--rounds 5] [--steps 5] [--warmup 2]
        [--threads N] [--omp-wait-policy passive|active] [--no-layer-stats] [--check]
        [--json results/vs_torch.json]

What is compared, on the CPU, in float32:

- jaxdepth: the jitted `train_step` that `jaxdepth train` runs (`jaxdepth.train.build.build`,
  as `jaxdepth.bench.time_train` builds it): a Pre-LN RMSNorm / RoPE / SwiGLU transformer
  (the Llama architecture), untied embeddings, next-token cross-entropy, global-norm clipping
  at `train.grad_clip`, then `optax.adamw` (weight decay on matrices only) with its
  warmup-cosine schedule, with every default as `jaxdepth train` has it (the per-layer
  statistics included, which the reference does not compute; `--no-layer-stats` leaves them
  out, `train.layer_stats=false`).
- PyTorch: Hugging Face `transformers.LlamaForCausalLM` with the same width, depth, heads,
  SwiGLU hidden size, vocabulary, RMSNorm epsilon and RoPE theta, untied embeddings,
  `attn_implementation="sdpa"` (`torch.nn.functional.scaled_dot_product_attention`), run
  eagerly (no `torch.compile`). One step = `zero_grad`, forward, `F.cross_entropy` of the
  logits against the next tokens (the same B * T targets as jaxdepth), backward,
  `clip_grad_norm_(grad_clip)`, `torch.optim.AdamW` with jaxdepth's lr, betas, eps
  (`jaxdepth.model.parameterization.ADAM_EPS`) and weight decay on the matrices only, and the
  learning rate of jaxdepth's schedule at that step (`LambdaLR`).

How: both models live in one process and train on the same fixed (B, T + 1) batch of random
byte tokens. After `--warmup` steps of each (jaxdepth's first step compiles), `--rounds`
interleaved A/B rounds: `--steps` jaxdepth steps (`block_until_ready` on each), then `--steps`
torch steps. A round's tokens/s is B * T over the median step time of that round; the ratio
jaxdepth / torch is taken within each round, so a shared machine's load drifts out of it, and
the summary gives the median tokens/s of each side, the median per-round ratio and its range.

Each framework's own peak: the best of 10 float32 2048 x 2048 matmuls (2 n^3 FLOPs), a jitted
`x @ x` in jax and `torch.mm` in torch, measured in the same process just before the rounds.
Model FLOPs per step: `jaxdepth.bench.step_flops` (6 N T + causal attention + unembedding),
the same count for both sides, divided by each side's median step time and its own peak.

Threads: torch uses `--threads` (default: every core this process may run on,
`torch.set_num_threads`); XLA's CPU backend always uses every core. Both are printed.
Torch's OpenMP threads wait passively by default (`OMP_WAIT_POLICY=PASSIVE`,
`--omp-wait-policy`): when every core is not free for them (another process on a shared
machine, or XLA's pool just after a jaxdepth step), libgomp's spinning waits stall a step
made of hundreds of small parallel regions. On this project's shared 2-core machine the
tiny-shape torch step (see --help) took ~6 ms with PASSIVE, 27-110 ms with ACTIVE and ~540 ms
with the variable unset (libgomp's default), in the same minutes, at 2 threads.
`--check` first verifies that the two models have the same number of parameters (and that
the torch model got the intended RoPE theta and attention kernel) and stops if they differ.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

MATMUL_N = 2048
MATMUL_REPEATS = 10
BYTE_VOCAB, PAD_ID = 258, 257  # jaxdepth's byte tokenizer: 256 bytes + 2 specials


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="jaxdepth train step vs Hugging Face LlamaForCausalLM + torch AdamW: "
                    "tokens/s in interleaved rounds in one process (CPU, float32)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--width", type=int, default=512, help="hidden size")
    p.add_argument("--depth", type=int, default=8, help="layers")
    p.add_argument("--heads", type=int, default=8, help="attention heads (= key/value heads)")
    p.add_argument("--ffn", type=int, default=1365, help="SwiGLU hidden size")
    p.add_argument("--seq", type=int, default=256, help="sequence length T")
    p.add_argument("--batch", type=int, default=8, help="sequences per step B")
    p.add_argument("--vocab", type=int, default=320,
                   help="vocabulary size (>= 258, jaxdepth's byte tokenizer)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved A/B rounds")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads; 0: every available core")
    p.add_argument("--omp-wait-policy", choices=("passive", "active"),
                   default=(os.environ.get("OMP_WAIT_POLICY") or "passive").lower(),
                   help="OMP_WAIT_POLICY of torch's OpenMP threads (default: the environment's, "
                        "else passive; see the module docstring)")
    p.add_argument("--no-layer-stats", dest="layer_stats", action="store_false",
                   help="leave jaxdepth's per-layer statistics out (train.layer_stats=false)")
    p.add_argument("--check", action="store_true",
                   help="first check that both models have the same parameter count")
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    for name in ("width", "depth", "heads", "ffn", "seq", "batch", "rounds", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0 or args.threads < 0:
        p.error("--warmup and --threads must be >= 0")
    if args.omp_wait_policy not in ("passive", "active"):
        p.error(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')!r}: give passive or active")
    if args.vocab < BYTE_VOCAB:
        p.error(f"--vocab must be >= {BYTE_VOCAB} (jaxdepth's byte tokenizer)")
    return args


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------- jaxdepth side


def build_jax(args):
    """(mcfg, tcfg, Built, state, batch) for the jaxdepth train step at the benchmark shape."""

    import jax

    from jaxdepth import parallel
    from jaxdepth.config import load_config
    from jaxdepth.train.build import build, resolve_model

    overrides = [f"model.depth={args.depth}", f"model.width={args.width}",
                 f"model.heads={args.heads}", f"model.kv_heads={args.heads}",
                 f"model.ffn_hidden={args.ffn}", "model.ffn=swiglu", "model.norm=rmsnorm",
                 "model.scheme=pre", "model.positions=rope", "model.tied_embeddings=false",
                 f"model.vocab_size={args.vocab}", "model.dtype=float32",
                 "model.param_dtype=float32", "model.parameterization=sp",
                 f"data.seq_len={args.seq}", f"data.batch_size={args.batch}",
                 "train.weight_decay=0.1", "train.grad_clip=1.0", "train.microbatches=1",
                 f"train.layer_stats={str(args.layer_stats).lower()}"]
    cfg = load_config(None, overrides)
    mcfg = resolve_model(cfg.model, BYTE_VOCAB)
    b = build(mcfg, cfg.train, cfg.parallel, cfg.data.seq_len, PAD_ID)
    state = b.init_state(jax.random.key(0))
    return cfg, mcfg, b, state, parallel.global_batch({"tokens": tokens_np(args)},
                                                       b.batch_sharding)


def tokens_np(args):
    import numpy as np

    rng = np.random.default_rng(0)  # bytes only: no pad ids, so every target counts
    return rng.integers(0, 256, (args.batch, args.seq + 1), dtype=np.int32)


def jax_matmul_peak(n: int = MATMUL_N, repeats: int = MATMUL_REPEATS) -> float:
    """jax's float32 n x n matmul peak, as `jaxdepth bench` measures it."""
    from jaxdepth.bench import matmul_peak

    return matmul_peak("float32", "cpu", n, repeats)["flops_per_s"]


# ---------------------------------------------------------------- torch side


def build_torch(args, mcfg, tcfg, schedule_steps: int):
    """(model, optimizer, lr scheduler, inputs, targets): the Hugging Face Llama twin."""
    import inspect

    import numpy as np
    import torch
    import transformers

    from jaxdepth.model.parameterization import ADAM_EPS

    torch.manual_seed(0)
    kw = dict(vocab_size=mcfg.vocab_size, hidden_size=mcfg.width,
              intermediate_size=mcfg.ffn_hidden_size, num_hidden_layers=mcfg.depth,
              num_attention_heads=mcfg.heads, num_key_value_heads=mcfg.kv_head_count,
              head_dim=mcfg.head_dim, hidden_act="silu",
              max_position_embeddings=max(args.seq, 2048), rms_norm_eps=mcfg.norm_eps,
              tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
              attention_dropout=0.0, initializer_range=mcfg.init_std, use_cache=False,
              pad_token_id=PAD_ID, bos_token_id=None, eos_token_id=None,
              attn_implementation="sdpa")
    params = inspect.signature(transformers.LlamaConfig.__init__).parameters
    if "rope_parameters" in params:  # transformers 5
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": mcfg.rope_theta}
    else:  # transformers 4.x
        kw["rope_theta"] = mcfg.rope_theta
    kw["dtype" if "dtype" in params else "torch_dtype"] = torch.float32
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).to(torch.float32)
    model.train()

    # jaxdepth's decay mask: matrices (kernels, embeddings) decay, norm scales do not
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tcfg.lr, betas=(tcfg.b1, tcfg.b2), eps=ADAM_EPS)
    # jaxdepth's warmup-cosine learning rate at each step, as a multiple of lr
    lrs = np.asarray(schedule_steps, np.float64) / tcfg.lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(lrs[min(s, len(lrs) - 1)]))
    tok = torch.from_numpy(tokens_np(args).astype(np.int64))
    return model, opt, sched, tok[:, :-1].contiguous(), tok[:, 1:].contiguous()


def torch_step(model, opt, sched, x, y, grad_clip: float):
    """One training step; returns the (detached) loss tensor."""
    import torch
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    logits = model(input_ids=x, use_cache=False).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss.detach()


def torch_matmul_peak(n: int = MATMUL_N, repeats: int = MATMUL_REPEATS) -> float:
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float32)
    out = torch.empty_like(a)
    torch.mm(a, a, out=out)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, a, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


# ---------------------------------------------------------------- checks and report


def check_models(state, model, mcfg) -> dict:
    """Same parameter count on both sides, RoPE theta and the sdpa kernel in the torch model."""
    import math

    from jaxdepth.model import count_params

    n_jax = count_params(state.params)
    n_torch = sum(p.numel() for p in model.parameters())
    print(f"check: parameters  jaxdepth {n_jax:,}  torch {n_torch:,}")
    problems = []
    if n_jax != n_torch:
        problems.append(f"parameter counts differ: jaxdepth {n_jax:,} vs torch {n_torch:,} "
                        f"(difference {n_jax - n_torch:+,})")
    inv_freq = getattr(getattr(model.model, "rotary_emb", None), "inv_freq", None)
    if inv_freq is not None and len(inv_freq) > 1:
        want = mcfg.rope_theta ** (-2.0 / mcfg.head_dim)
        if not math.isclose(float(inv_freq[1]), want, rel_tol=1e-5):
            problems.append(f"torch RoPE inv_freq[1] {float(inv_freq[1]):.6g} != "
                            f"theta^(-2/head_dim) = {want:.6g} (theta {mcfg.rope_theta})")
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        problems.append(f"torch attention implementation is {attn!r}, not 'sdpa'")
    if problems:
        for msg in problems:
            print(f"check FAILED: {msg}", file=sys.stderr)
        sys.exit(1)
    print(f"check: ok (RoPE theta {mcfg.rope_theta:g}, attention {attn})")
    return {"params_jaxdepth": n_jax, "params_torch": n_torch}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the same hardware as torch's CPU build
    # read once, when torch's OpenMP runtime starts: set before torch is imported
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"error: {e}; this benchmark needs torch and transformers: "
              "pip install -e '.[bench]'", file=sys.stderr)
        return 2
    import jax
    import numpy as np

    from jaxdepth.bench import step_flops
    from jaxdepth.model import count_params

    cores = available_cores()
    threads = args.threads or cores
    torch.set_num_threads(threads)
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(), "machine": platform.machine(), "cores": cores,
        "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()),
        "python": platform.python_version(), "jax": jax.__version__,
        "jax_backend": jax.default_backend(), "torch": torch.__version__,
        "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
        "xla_threads": f"all cores ({cores})", "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
    }
    print(f"{info['date']}  {info['cpu']} ({info['machine']}), {cores} cores available "
          f"of {info['cpu_count']}, load {' '.join(f'{x:.2f}' for x in info['loadavg'])}")
    print(f"python {info['python']}, jax {info['jax']} ({info['jax_backend']}), "
          f"torch {info['torch']}, transformers {info['transformers']}; threads: torch "
          f"{info['torch_threads']} (OMP_WAIT_POLICY={info['omp_wait_policy']}), "
          f"XLA {info['xla_threads']}")

    cfg, mcfg, b, state, batch = build_jax(args)
    tcfg = cfg.train
    B, T = cfg.data.batch_size, cfg.data.seq_len
    tokens_per_step = B * T
    total_steps = args.warmup + args.rounds * args.steps + 1
    lrs = np.asarray([float(b.schedule(i)) for i in range(total_steps)])
    model, opt, sched, x, y = build_torch(args, mcfg, tcfg, lrs)
    shape = dict(width=mcfg.width, depth=mcfg.depth, heads=mcfg.heads,
                 kv_heads=mcfg.kv_head_count, head_dim=mcfg.head_dim,
                 ffn_hidden=mcfg.ffn_hidden_size, vocab=mcfg.vocab_size, seq=T, batch=B,
                 dtype="float32", tied_embeddings=False,
                 layer_stats=tcfg.layer_stats)
    print("shape: " + ", ".join(f"{k} {v}" for k, v in shape.items()))
    print(f"torch: LlamaForCausalLM, attn_implementation=sdpa, eager; AdamW(lr {tcfg.lr:g}, "
          f"betas ({tcfg.b1:g}, {tcfg.b2:g}), wd {tcfg.weight_decay:g}), clip "
          f"{tcfg.grad_clip:g}")
    res = {"info": info, "shape": shape}
    if args.check:
        res["check"] = check_models(state, model, mcfg)

    non_embedding = count_params(state.params, True)
    flops = step_flops(mcfg, T, non_embedding, tokens_per_step)
    res["params"] = count_params(state.params)
    res["non_embedding_params"] = non_embedding
    res["flops_per_step"] = flops

    peak_jax, peak_torch = jax_matmul_peak(), torch_matmul_peak()
    print(f"matmul peak (float32 {MATMUL_N}^2, best of {MATMUL_REPEATS}): jax "
          f"{peak_jax / 1e9:.1f} GFLOP/s, torch {peak_torch / 1e9:.1f} GFLOP/s")

    def jax_steps(n):
        nonlocal state
        times, loss = [], None
        for _ in range(n):
            t = time.perf_counter()
            state, m = b.train_step(state, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
            loss = m["loss"]
        return times, float(loss) if loss is not None else float("nan")

    def torch_steps(n):
        times, loss = [], None
        for _ in range(n):
            t = time.perf_counter()
            loss = torch_step(model, opt, sched, x, y, tcfg.grad_clip)
            times.append(time.perf_counter() - t)
        return times, float(loss) if loss is not None else float("nan")

    t0 = time.perf_counter()
    jw, jloss = jax_steps(max(args.warmup, 1))  # the first step compiles
    tw, tloss = torch_steps(args.warmup)
    print(f"warmup: jaxdepth first step {jw[0]:.2f} s (compile), {len(jw)} steps; torch "
          f"{len(tw)} steps{f' ({sum(tw):.2f} s)' if tw else ''}; "
          f"loss jaxdepth {jloss:.3f}, torch {tloss:.3f}")

    rounds = []
    print(f"{'round':>5} {'jax ms':>9} {'torch ms':>9} {'jax tok/s':>10} {'torch tok/s':>11} "
          f"{'jax/torch':>9} {'jax loss':>9} {'torch loss':>10}")
    for r in range(args.rounds):
        jt, jloss = jax_steps(args.steps)
        tt, tloss = torch_steps(args.steps)
        js, ts = statistics.median(jt), statistics.median(tt)
        row = dict(round=r + 1, jax_step_s=js, torch_step_s=ts,
                   jax_tokens_per_s=tokens_per_step / js,
                   torch_tokens_per_s=tokens_per_step / ts, ratio=ts / js,
                   jax_loss=jloss, torch_loss=tloss, jax_times=jt, torch_times=tt)
        rounds.append(row)
        print(f"{r + 1:>5} {js * 1e3:>9.1f} {ts * 1e3:>9.1f} {row['jax_tokens_per_s']:>10.0f} "
              f"{row['torch_tokens_per_s']:>11.0f} {row['ratio']:>9.2f} {jloss:>9.3f} "
              f"{tloss:>10.3f}", flush=True)

    med = statistics.median
    jtok = med([r["jax_tokens_per_s"] for r in rounds])
    ttok = med([r["torch_tokens_per_s"] for r in rounds])
    ratios = [r["ratio"] for r in rounds]
    jstep, tstep = med([r["jax_step_s"] for r in rounds]), med([r["torch_step_s"] for r in rounds])
    summary = dict(
        jax_tokens_per_s=jtok, torch_tokens_per_s=ttok, ratio_median=med(ratios),
        ratio_min=min(ratios), ratio_max=max(ratios),
        jax_step_s=jstep, torch_step_s=tstep,
        jax_matmul_peak_flops=peak_jax, torch_matmul_peak_flops=peak_torch,
        jax_model_flops_per_s=flops / jstep, torch_model_flops_per_s=flops / tstep,
        jax_fraction_of_peak=flops / jstep / peak_jax,
        torch_fraction_of_peak=flops / tstep / peak_torch,
        wall_s=time.perf_counter() - t0)
    res["rounds"], res["summary"] = rounds, summary
    print(f"params {res['params']:,} ({non_embedding:,} non-embedding); model "
          f"{flops / 1e9:.2f} GFLOP per step of {tokens_per_step} tokens")
    print(f"jaxdepth: {jtok:.0f} tok/s (median of {args.rounds} rounds), "
          f"{summary['jax_model_flops_per_s'] / 1e9:.1f} GFLOP/s = "
          f"{summary['jax_fraction_of_peak']:.2f} of jax's matmul peak")
    print(f"torch:    {ttok:.0f} tok/s (median of {args.rounds} rounds), "
          f"{summary['torch_model_flops_per_s'] / 1e9:.1f} GFLOP/s = "
          f"{summary['torch_fraction_of_peak']:.2f} of torch's matmul peak")
    print(f"jaxdepth / torch tokens/s: {summary['ratio_median']:.2f} (median of per-round "
          f"ratios; range {summary['ratio_min']:.2f}-{summary['ratio_max']:.2f})")
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
