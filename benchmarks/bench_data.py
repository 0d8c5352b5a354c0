"""The data path's three targets, each a ratio measured in one run of this script:

1. `prepare` throughput with a BPE tokenizer.json (trained here on the embedded corpus),
   2 worker processes against 1, tokens/s (target >= 1.8x).
2. Peak resident memory of a `jaxdepth train` process on a 2B-token prepared corpus against
   the same run on a 20M-token one (synthetic byte-token shards this script writes, ~4 GB on
   disk; target: within 200 MB), and the time to the first batch of each (target < 5 s).
3. Batches/s of the input pipeline alone against the train steps/s of configs/tiny.yaml
   (target >= 20x).

    python benchmarks/bench_data.py [--work DIR] [--big-tokens 2e9] [--text-mb 48]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARD_TOKENS = 100_000_000  # 200 MB uint16 shards


def write_synthetic(out: Path, n_tokens: int, seed: int = 0) -> Path:
    """A prepared byte-token corpus of random bytes with an EOS every ~2000 tokens."""
    from jaxdepth.data import shards
    from jaxdepth.rundir import write_json

    if shards.is_complete(out) and shards.read_manifest(out)["totals"]["train"]["tokens"] == n_tokens:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for split, total in (("train", n_tokens), ("val", 2_000_000)):
        for k, lo in enumerate(range(0, total, SHARD_TOKENS)):
            n = min(SHARD_TOKENS, total - lo)
            ids = rng.integers(0, 256, n, dtype=np.uint16)
            ids[rng.integers(0, n, n // 2000)] = 256
            name = f"{split}-{k:05d}.bin"
            ids.tofile(out / name)
            docs = int((ids == 256).sum())
            entries.append(dict(file=name, split=split, tokens=n, docs=docs, bytes=n - docs))
    totals = {s: {k: sum(e[k] for e in entries if e["split"] == s)
                  for k in ("tokens", "docs", "bytes")} for s in shards.SPLITS}
    write_json(out / shards.MANIFEST, dict(
        format=shards.FORMAT, complete=True, job={"synthetic": n_tokens},
        tokenizer=dict(kind="byte", spec="byte", identity="byte", vocab_size=258, eos_id=256,
                       bos_id=None, pad_id=257),
        dtype="uint16", shards=entries, totals=totals, text={}))
    return out


def bench_prepare(work: Path, text_mb: float) -> dict:
    """tokens/s of `prepare` with a pretrained-style BPE tokenizer.json, 1 and 2 workers."""
    from jaxdepth.data.prepare import prepare
    from jaxdepth.data.sources import stdlib_docs
    from jaxdepth.data.tokenizers import load_tokenizer

    texts = [t for _, t in stdlib_docs() if t.strip()]
    tdir = work / "tokenizer"
    if not (tdir / "tokenizer.json").exists():
        tdir.mkdir(parents=True, exist_ok=True)
        load_tokenizer("bpe:8192", train_texts=lambda: iter(texts)).save(tdir / "tokenizer.json")
        (tdir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eos|>"}))
    src = work / "text.jsonl"
    if not src.exists():
        with src.open("w") as f:
            size, i = 0, 0
            while size < text_mb * 2**20:
                t = texts[i % len(texts)]
                f.write(json.dumps({"text": t}) + "\n")
                size, i = size + len(t), i + 1
    out = {}
    for w in (1, 2):
        d = work / f"prep-{w}"
        t0 = time.perf_counter()
        m = prepare([str(src)], d, tokenizer=str(tdir), workers=w, shard_bytes=2 << 20,
                    progress=False, overwrite=True)
        dt = time.perf_counter() - t0
        n = sum(t["tokens"] for t in m["totals"].values())
        out[w] = dict(tokens=n, seconds=dt, tokens_per_s=n / dt)
        for f in d.glob("*.bin"):  # the next run starts afresh
            f.unlink()
        (d / "manifest.json").unlink()
    return out


CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from jaxdepth.config import load_config
from jaxdepth.data.pipeline import load_corpus, train_iterator
cfg = load_config(sys.argv[1], ["data.source=" + sys.argv[2]])
next(train_iterator(load_corpus(cfg.data), cfg.data))
first = time.perf_counter() - t0
print(json.dumps(dict(first_batch_s=first)))
"""


def _peak_rss_mb(args: list[str]) -> tuple[float, str]:
    """Peak resident memory (MB) of one child process, from wait4's rusage."""
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise RuntimeError(f"{args} failed: {out[-500:]}")
    return ru.ru_maxrss / 1024, out


def bench_memory(work: Path, big_tokens: int, steps: int) -> dict:
    cfg = str(ROOT / "configs" / "tiny.yaml")
    out = {}
    for name, n in (("20M", 20_000_000), (f"{big_tokens / 1e9:g}B", big_tokens)):
        d = write_synthetic(work / f"synthetic-{n}", n)
        _, first = _peak_rss_mb(["-c", CHILD, cfg, str(d)])
        rss, _ = _peak_rss_mb(["-m", "jaxdepth.cli", "train", cfg, f"data.source={d}",
                               f"train.steps={steps}", "train.eval_every=0",
                               f"train.ckpt_every={steps}", "--no-progress",
                               "--run-dir", str(work / f"run-{n}-{time.time_ns()}")])
        out[name] = dict(tokens=n, peak_rss_mb=rss, **json.loads(first.strip().splitlines()[-1]))
    return out


def bench_pipeline(work: Path, big_tokens: int, steps: int) -> dict:
    """Batches/s of the grain iterator alone vs train steps/s, tiny config, one process."""
    import jax

    from jaxdepth.config import load_config
    from jaxdepth.data.pipeline import load_corpus, train_iterator
    from jaxdepth.train.build import build, resolve_model

    d = work / f"synthetic-{big_tokens}"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"data.source={d}"])
    corpus = load_corpus(cfg.data)
    it = train_iterator(corpus, cfg.data)
    next(it)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        batch = next(it)
    pipe = n / (time.perf_counter() - t0)
    b = build(resolve_model(cfg.model, corpus.tokenizer.vocab_size), cfg.train, cfg.parallel,
              cfg.data.seq_len, corpus.tokenizer.pad_id)
    state = b.init_state(jax.random.key(0))
    from jaxdepth import parallel

    x = parallel.global_batch(batch, b.batch_sharding)
    state, m = b.train_step(state, x)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = b.train_step(state, x)
    jax.block_until_ready(m)
    step = steps / (time.perf_counter() - t0)
    return dict(pipeline_batches_per_s=pipe, train_steps_per_s=step, ratio=pipe / step)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/jaxdepth-bench-data", help="scratch directory")
    p.add_argument("--big-tokens", type=float, default=2e9)
    p.add_argument("--text-mb", type=float, default=48.0, help="text for the prepare bench")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--only", choices=("prepare", "memory", "pipeline"), action="append")
    args = p.parse_args(argv)
    work, big = Path(args.work), int(args.big_tokens)
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ("prepare", "memory", "pipeline"))
    res = {}
    if "prepare" in only:
        r = res["prepare"] = bench_prepare(work, args.text_mb)
        print(f"prepare, BPE tokenizer.json, {r[1]['tokens'] / 1e6:.1f}M tokens: "
              f"1 worker {r[1]['tokens_per_s']:,.0f} tok/s, 2 workers "
              f"{r[2]['tokens_per_s']:,.0f} tok/s: {r[2]['tokens_per_s'] / r[1]['tokens_per_s']:.2f}x"
              " (target >= 1.8x)")
    if "memory" in only:
        r = res["memory"] = bench_memory(work, big, args.steps)
        (small, a), (large, b) = r.items()
        print(f"train peak RSS: {small} {a['peak_rss_mb']:.0f} MB, {large} "
              f"{b['peak_rss_mb']:.0f} MB: {b['peak_rss_mb'] - a['peak_rss_mb']:+.0f} MB "
              f"(target <= 200); first batch {a['first_batch_s']:.2f} s / "
              f"{b['first_batch_s']:.2f} s (target < 5)")
    if "pipeline" in only:
        if "memory" not in only:
            write_synthetic(work / f"synthetic-{big}", big)
        r = res["pipeline"] = bench_pipeline(work, big, args.steps)
        print(f"pipeline {r['pipeline_batches_per_s']:,.0f} batches/s vs train "
              f"{r['train_steps_per_s']:.1f} steps/s (tiny): {r['ratio']:.0f}x (target >= 20x)")
    (work / "bench_data.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
