"""Peak resident memory of `jaxdepth import` on a ~1B-parameter Llama checkpoint, against the
size of the weights. The claim under test: the importer streams tensor by tensor from the
memory-mapped shards into preallocated stacked arrays, so the process holds one copy of the
weights (plus one tensor, the mapped pages of the current shard and the runtime), never two.
Target: peak RSS / param bytes well under 2 (one copy + overhead, not two copies).

    python benchmarks/bench_import.py [--out-dir /tmp/bench_import] [--layers 20]
        [--cases bf16 f32] [--keep] [--trace]

The script writes a synthetic Hugging Face Llama directory without torch or transformers
(numpy + `safetensors.numpy.save_file`, bf16 via `ml_dtypes`): config.json (LlamaForCausalLM,
hidden 2048, intermediate 5632, 32 heads, 8 KV heads, vocab 32000 untied; 20 layers by default
= 1.03B parameters), small random weights named as HF names them, written shard by shard
(~1 GB shards) with model.safetensors.index.json, and a small byte-level BPE tokenizer.json
(trained here with `tokenizers`, `<|endoftext|>` its EOS). Each case then runs `jaxdepth
import SRC --out DST --no-progress` in a fresh subprocess:

- bf16: a BF16 source, default dtype (bfloat16 params).
- f32: a float32 source, default dtype (float32 params).
- bf16-to-f32: the BF16 source with `--dtype float32` (params twice the source bytes).

Measured per case: the child's peak RSS (`ru_maxrss` of that child, from `os.wait4`), its peak
anonymous and file-backed resident memory (sampled from /proc/PID/status every 50 ms: file
pages are the mapped shards and libraries), wall time, the source bytes (sum of the
safetensors files) and the run directory's size on disk. `runtime` is the peak RSS of a child
that only imports what the importer imports (python, jax, orbax, safetensors): the floor
under any import. Columns: peak/params = peak RSS / param bytes (target < 2, ideally ~1 plus
the runtime); (peak-runtime)/params takes the runtime floor out. Disk: at most the source and
one run directory of the largest case at a time (~7.5 GB at the default size for f32); all
files are deleted at the end unless `--keep`.

Measured on this project's 2-core x86 CPU machine (jax 0.10.2, orbax-checkpoint 0.12.8),
default size: bf16 peak 2.50 GiB for 1.92 GiB of params (1.30), f32 4.62 GiB for 3.85 GiB
(1.20), 26 s and 65 s. Reading holds one copy (params + one tensor). Before
`checkpoint.save_params` turned off Orbax's deep copy of numpy arrays
(`deepcopy_host_arrays`) and zstd compression (TensorStore holds the compressed chunks until
a 2 GiB data file is flushed), the same imports peaked at 5.76 GiB (3.00) and 11.8 GiB (3.06).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 2.0  # peak RSS / param bytes must stay under this (two copies would reach it)

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 2048, 5632, 32, 8, 32000
SHARD_BYTES = 1 << 30
CASES = {  # name -> (source dtype, --dtype or None)
    "bf16": ("bfloat16", None),
    "f32": ("float32", None),
    "bf16-to-f32": ("bfloat16", "float32"),
}


def tensor_shapes(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """HF Llama names and (out, in) shapes, in the order the HF model saves them."""
    hd = HIDDEN // HEADS
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        pre = f"model.layers.{i}."
        out += [(pre + "self_attn.q_proj.weight", (HEADS * hd, HIDDEN)),
                (pre + "self_attn.k_proj.weight", (KV_HEADS * hd, HIDDEN)),
                (pre + "self_attn.v_proj.weight", (KV_HEADS * hd, HIDDEN)),
                (pre + "self_attn.o_proj.weight", (HIDDEN, HEADS * hd)),
                (pre + "mlp.gate_proj.weight", (FFN, HIDDEN)),
                (pre + "mlp.up_proj.weight", (FFN, HIDDEN)),
                (pre + "mlp.down_proj.weight", (HIDDEN, FFN)),
                (pre + "input_layernorm.weight", (HIDDEN,)),
                (pre + "post_attention_layernorm.weight", (HIDDEN,))]
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return out


def param_count(layers: int) -> int:
    return sum(int(np.prod(s)) for _, s in tensor_shapes(layers))


def train_tokenizer(path: Path) -> int:
    """A byte-level BPE tokenizer.json (vocab ~2k, `<|endoftext|>` = id 0); its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "jaxdepth").rglob("*.py"))]
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))
    return tok.get_vocab_size()


def write_checkpoint(out: Path, layers: int, dtype: str, seed: int = 0) -> int:
    """A synthetic HF Llama directory at `out`, written shard by shard; its safetensors bytes."""
    import ml_dtypes
    from safetensors.numpy import save_file

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    itemsize = np.dtype(np_dtype).itemsize
    out.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(layers)
    total = sum(int(np.prod(s)) for _, s in shapes) * itemsize
    n_shards = max(1, -(-total // SHARD_BYTES))
    rng = np.random.default_rng(seed)
    weight_map, shard, size, k = {}, {}, 0, 0

    def flush():
        nonlocal shard, size, k
        k += 1
        name = f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({t: name for t in shard})
        shard, size = {}, 0

    for name, shape in shapes:
        if len(shape) == 1:
            w = np.ones(shape, np_dtype)
        else:
            w = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np_dtype)
        if shard and size + w.nbytes > SHARD_BYTES:
            flush()
        shard[name], size = w, size + w.nbytes
        del w
    flush()
    if k != n_shards:  # shard names say "of N": rename to the count actually written
        for old in sorted(set(weight_map.values())):
            new = old.replace(f"-of-{n_shards:05d}", f"-of-{k:05d}")
            (out / old).rename(out / new)
        weight_map = {t: s.replace(f"-of-{n_shards:05d}", f"-of-{k:05d}")
                      for t, s in weight_map.items()}
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 2048, "vocab_size": VOCAB,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0,
        "torch_dtype": dtype}, indent=1))
    vocab = train_tokenizer(out / "tokenizer.json")
    assert vocab <= VOCAB, vocab
    return sum(p.stat().st_size for p in out.glob("*.safetensors"))


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def run_child(cmd: list[str], trace: bool = False) -> dict:
    """Run `cmd`; its wall time, peak RSS (ru_maxrss of this child) and sampled peaks."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0}
    samples = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            s = _status_kib(proc.pid)
            for k, v in peaks.items():
                peaks[k] = max(v, s.get(k, 0))
            if trace and s:
                samples.append((time.perf_counter() - t0, s.get("RssAnon", 0),
                                s.get("RssFile", 0)))
            done.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    output = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    done.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    if trace:
        step = max(1, len(samples) // 60)
        print(f"  trace of {' '.join(cmd[-4:])} (s, anon GiB, file GiB):")
        for t, a, f in samples[::step]:
            print(f"    {t:7.1f}  {a / 2**30:6.2f}  {f / 2**30:6.2f}")
    return {"wall": wall, "peak": ru.ru_maxrss * 1024, "peak_anon": peaks["RssAnon"],
            "peak_file": peaks["RssFile"], "output": output.strip()}


def runtime_rss() -> int:
    """Peak RSS of a child that only imports the modules `jaxdepth import` uses."""
    code = ("import jax, flax.linen, orbax.checkpoint, safetensors, ml_dtypes, tqdm, tokenizers; "
            "import jaxdepth.convert.importer, jaxdepth.checkpoint, jaxdepth.model, "
            "jaxdepth.data.tokenizers; jax.devices()")
    return run_child([sys.executable, "-c", code])["peak"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="/tmp/bench_import", help="where the synthetic "
                   "checkpoints and run directories go (deleted at the end unless --keep)")
    p.add_argument("--layers", type=int, default=20, help="decoder layers (20: 1.03B params)")
    p.add_argument("--cases", nargs="+", default=["bf16", "f32"], choices=list(CASES))
    p.add_argument("--keep", action="store_true", help="keep the files written")
    p.add_argument("--trace", action="store_true", help="print each child's RSS over time")
    args = p.parse_args(argv)

    from jaxdepth.memory import human_bytes as hb
    from jaxdepth.tables import table

    work = Path(args.out_dir)
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} exists and is not empty; give a new --out-dir")
    work.mkdir(parents=True, exist_ok=True)
    n = param_count(args.layers)
    jaxdepth = str(Path(sys.executable).with_name("jaxdepth"))
    print(f"synthetic Llama: {args.layers} layers, hidden {HIDDEN}, ffn {FFN}, heads "
          f"{HEADS}/{KV_HEADS}, vocab {VOCAB} untied: {n:,} params", flush=True)
    base = runtime_rss()
    print(f"runtime (imports only): peak RSS {hb(base)}", flush=True)
    rows = []
    try:
        # the cases grouped by source dtype, so each source is written once and deleted
        order = sorted(args.cases, key=lambda c: list(CASES).index(c))
        order.sort(key=lambda c: CASES[c][0] != "bfloat16")
        src_dtype, src, src_bytes = None, None, 0
        for case in order:
            want_src, flag = CASES[case]
            if want_src != src_dtype:
                if src is not None and not args.keep:
                    shutil.rmtree(src)
                src, src_dtype = work / f"src-{want_src}", want_src
                t = time.perf_counter()
                src_bytes = write_checkpoint(src, args.layers, want_src)
                print(f"wrote {src} ({hb(src_bytes)}, {len(list(src.glob('*.safetensors')))} "
                      f"shards) in {time.perf_counter() - t:.0f} s", flush=True)
            dst = work / f"run-{case}"
            cmd = [jaxdepth, "import", str(src), "--out", str(dst), "--no-progress"]
            if flag:
                cmd += ["--dtype", flag]
            r = run_child(cmd, args.trace)
            status = json.loads((dst / "status.json").read_text())
            assert status["params"] == n, (status["params"], n)
            pbytes = n * (2 if status["param_dtype"] == "bfloat16" else 4)
            rows.append({"case": case, "params": n, "param_dtype": status["param_dtype"],
                         "source": src_bytes, "param_bytes": pbytes, "peak": r["peak"],
                         "anon": r["peak_anon"], "file": r["peak_file"],
                         "ratio": r["peak"] / pbytes, "net": (r["peak"] - base) / pbytes,
                         "wall": r["wall"], "run_dir": dir_bytes(dst)})
            print(f"{case}: peak RSS {hb(r['peak'])} (anon {hb(r['peak_anon'])}, file "
                  f"{hb(r['peak_file'])}) in {r['wall']:.1f} s: {r['output'].splitlines()[0]}",
                  flush=True)
            if not args.keep:
                shutil.rmtree(dst)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows, ["case", "params", "param_dtype", "source", "param_bytes", "peak", "anon",
                       "file", "ratio", "net", "wall", "run_dir"],
                {"case": str, "params": lambda v: f"{v / 1e9:.3f}B", "param_dtype": str,
                 "source": hb, "param_bytes": hb, "peak": hb, "anon": hb, "file": hb,
                 "ratio": ".2f", "net": ".2f", "wall": ".1f", "run_dir": hb},
                style="text",
                headers={"source": "source_bytes", "peak": "peak_rss", "anon": "peak_anon",
                         "file": "peak_file", "ratio": "peak/params",
                         "net": "(peak-runtime)/params", "wall": "wall_s"}))
    bad = [r["case"] for r in rows if r["ratio"] >= TARGET]
    print(f"runtime floor (imports only) {hb(base)}; target: peak RSS / param bytes < "
          f"{TARGET:.1f} (one copy of the weights plus overhead, not two)"
          + (f"; OVER: {', '.join(bad)}" if bad else "; all under"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
