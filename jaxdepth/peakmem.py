"""Peak memory of a config's train step, measured in a fresh process (`measure_fresh`).

The one measurement `jaxdepth bench` and `benchmarks/bench_memory.py` share. A fresh
subprocess builds the step (`train.build.build`), compiles `init_state` and `train_step` ahead
of time, then takes a baseline, creates the state (parameters, Adam moments), puts a batch of
random tokens on the device and runs `steps` train steps (the state donated, as in
training), blocking on each. `measured` is the peak since the baseline minus the baseline:
every byte the state, the batch and the steps' buffers occupied at the worst moment. How the
peak is read depends on the platform (`memory_method`):

- `rss` (CPU): the process's resident set. Freed heap is returned to the OS (`malloc_trim`),
  the baseline is VmRSS, the kernel's peak counter is reset to it (`echo 5 >
  /proc/self/clear_refs`, Linux >= 4.0) and the peak is VmHWM. glibc's mmap threshold is
  fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_`) in the subprocess so that freed buffers leave
  the resident set instead of staying in the heap.
- `device_stats` (GPU/TPU): XLA's allocator, `device.memory_stats()`: baseline
  `bytes_in_use`, peak `peak_bytes_in_use`, the largest over this process's devices. The peak
  cannot be reset, so a peak set while compiling (GPU autotuning) and not exceeded by the
  steps makes `measured` an upper bound (`upper_bound: true`). The subprocess needs the
  accelerator to itself: the caller must not hold it (a TPU opens in one process only).

`xla` is XLA's own accounting of the compiled step (`compiled.memory_analysis()`: argument +
output - alias + temp bytes), a cross-check that needs no process measurement. On CPU it
misses the matmul outputs that XLA:CPU's YNNPACK fusions allocate themselves.

    echo '{"config": {...}, "vocab": 258, "pad_id": 257, "steps": 2}' | python -m jaxdepth.peakmem
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MMAP_THRESHOLD = "65536"  # bytes; glibc serves larger allocations by mmap, freed at once


def memory_method(platform: str) -> str:
    """How peak memory is read on `platform` (`jax.default_backend()`): "rss" (the process's
    peak resident set) on CPU, "device_stats" (the allocator's peak) on GPU and TPU."""
    return "rss" if platform == "cpu" else "device_stats"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _device_stats(devices) -> list[dict]:
    return [d.memory_stats() or {} for d in devices]


def measure(cfg, tokenizer_vocab: int, pad_id: int, steps: int = 2) -> dict:
    """Peak memory of `steps` train steps of `cfg` in this process, which must be fresh (see
    the module docstring): dict(method, measured, upper_bound, xla, loss), bytes."""
    import ctypes

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdepth import parallel
    from jaxdepth.train.build import build, resolve_model

    mcfg = resolve_model(cfg.model, tokenizer_vocab)
    B, T = cfg.data.batch_size, cfg.data.seq_len
    b = build(mcfg, cfg.train, cfg.parallel, T, pad_id)
    key = jax.random.key(0)
    init = b.init_state.lower(key).compile()
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            jax.eval_shape(b.init_state, key), b.state_shardings)
    tokens_spec = jax.ShapeDtypeStruct((B, T + 1), jnp.int32, sharding=b.batch_sharding)
    step = b.train_step.lower(abstract, {"tokens": tokens_spec}).compile()
    ma = step.memory_analysis()
    xla = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
           + ma.temp_size_in_bytes)
    tokens = np.random.default_rng(0).integers(0, mcfg.vocab_size, (B, T + 1), dtype=np.int32)

    method = memory_method(jax.default_backend())
    devices = jax.local_devices()
    if method == "rss":
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    else:
        before = _device_stats(devices)
    state = init(key)
    batch = parallel.global_batch({"tokens": tokens}, b.batch_sharding)
    for _ in range(steps):
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
    upper_bound = False
    if method == "rss":
        measured = (_status_kib("VmHWM") - base) * 1024
    else:
        pairs = list(zip(before, _device_stats(devices)))
        if not all("peak_bytes_in_use" in s for pair in pairs for s in pair):
            measured = None  # this backend keeps no allocator statistics
        else:
            measured = max(a["peak_bytes_in_use"] - b0["bytes_in_use"] for b0, a in pairs)
            upper_bound = any(a["peak_bytes_in_use"] == b0["peak_bytes_in_use"]
                              > b0["bytes_in_use"] for b0, a in pairs)
    return dict(method=method, measured=measured, upper_bound=upper_bound, xla=int(xla),
                loss=float(metrics["loss"]))


def measure_fresh(cfg, tokenizer_vocab: int, pad_id: int, steps: int = 2,
                  env: dict | None = None) -> dict:
    """`measure` in a fresh Python subprocess (with `MALLOC_MMAP_THRESHOLD_` set and `env`
    added to its environment); a failure raises RuntimeError with the end of its stderr."""
    from jaxdepth.config import to_dict

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD,
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               **(env or {}))
    request = dict(config=to_dict(cfg), vocab=tokenizer_vocab, pad_id=pad_id, steps=steps)
    out = subprocess.run([sys.executable, "-m", "jaxdepth.peakmem"], input=json.dumps(request),
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"peak-memory subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _main() -> int:
    from jaxdepth.config import RunConfig, from_dict, validate

    request = json.loads(sys.stdin.read())
    cfg = validate(from_dict(RunConfig, request["config"]))
    print(json.dumps(measure(cfg, request["vocab"], request["pad_id"], request["steps"])))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
