"""`jaxdepth prepare`: text sources -> token shards + manifest, once, in worker processes.

The documents of the sources are read in order and cut into chunks of about `shard_bytes`
of text; each chunk is tokenized (in one of `workers` processes, batched) into one train
and one validation shard (`train-00012.bin`, `val-00012.bin`; an empty split writes no
shard). Validation is held out by document: a hash of the document's key (as the small
corpora always were), or every document of `val_sources`. Shards are written whole and
renamed into place, and `manifest.json` is rewritten atomically after each one, listing
only finished shards; an interrupted run resumes at the first unfinished chunk.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxdepth.data import shards
from jaxdepth.data.sources import (
    EMBEDDED,
    TextStats,
    expand_sources,
    is_validation,
    iter_docs,
    source_fingerprint,
)
from jaxdepth.data.tokenizers import (
    from_saved,
    load_tokenizer,
    parse_spec,
    pretrained_identity,
)
from jaxdepth.errors import UserError
from jaxdepth.rundir import write_json

SHARD_BYTES = 16 << 20  # text per chunk: a shard of ~4M BPE tokens, several s of one core
ENCODE_BATCH = 256  # documents per encode_batch call (bounds the tokenizer's temporaries)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ---------------------------------------------------------------- chunks of documents


def _chunks(sources, text_field, utf8, stats, mode, shard_bytes) -> Iterator[tuple[str, list]]:
    """(mode, [(key, text), ...]) of about shard_bytes characters each, in source order."""
    docs, size = [], 0
    for src in sources:
        for key, text in iter_docs(src, text_field, utf8, stats):
            docs.append((key, text))
            size += len(text)
            if size >= shard_bytes:
                yield mode, docs
                docs, size = [], 0
    if docs:
        yield mode, docs


def _encode_chunk(tok, val_fraction: float, mode: str, docs: list) -> dict:
    """Token ids of one chunk per split: [BOS] doc EOS for every document, in order."""
    dtype = shards.token_dtype(tok.vocab_size)
    out = {s: {"ids": [], "docs": 0, "bytes": 0} for s in shards.SPLITS}
    eos = np.asarray([tok.eos_id], np.int32)
    bos = np.asarray([] if tok.bos_id is None else [tok.bos_id], np.int32)
    for lo in range(0, len(docs), ENCODE_BATCH):
        batch = docs[lo:lo + ENCODE_BATCH]
        for (key, text), ids in zip(batch, tok.encode_batch([t for _, t in batch])):
            split = "val" if mode == "val" or (
                mode == "hash" and is_validation(key, val_fraction)) else "train"
            o = out[split]
            o["ids"] += [bos, ids, eos]
            o["docs"] += 1
            o["bytes"] += len(text.encode("utf-8"))
    for o in out.values():
        o["ids"] = (np.concatenate(o["ids"]) if o["ids"] else np.zeros(0)).astype(dtype)
    return out


_WORKER: dict = {}


def _init_worker(tok, val_fraction):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: processes scale
    _WORKER.update(tok=tok, val_fraction=val_fraction)


def _encode_in_worker(item):
    return _encode_chunk(_WORKER["tok"], _WORKER["val_fraction"], *item)


def _encoded(items: Iterator, tok, val_fraction: float, workers: int) -> Iterator[dict]:
    """Encoded chunks in input order; with workers >= 1, in that many spawned processes
    with at most 2 chunks per worker in flight (memory stays bounded on any corpus)."""
    if workers <= 0:
        for item in items:
            yield _encode_chunk(tok, val_fraction, *item)
        return
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold jax
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(tok, val_fraction)) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(_encode_in_worker, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ---------------------------------------------------------------- the job and its manifest


def _job(sources, val_sources, tokenizer, bpe_vocab_size, text_field, val_fraction,
         shard_bytes, utf8, eos, bos) -> dict:
    """What decides a preparation's contents; a resumed run must match it exactly."""
    kind, arg = parse_spec(tokenizer, bpe_vocab_size)
    spec = f"bpe:{arg}" if kind == "bpe" else tokenizer
    return dict(tokenizer_file=pretrained_identity(arg) if kind == "pretrained" else None,
        sources=[{"source": s, "fingerprint": source_fingerprint(s)} for s in sources],
        val_sources=[{"source": s, "fingerprint": source_fingerprint(s)} for s in val_sources],
        tokenizer=spec, text_field=text_field,
        val_fraction=None if val_sources else val_fraction, shard_bytes=shard_bytes,
        utf8=utf8, eos=eos, bos=bos)


def _job_id(job: dict) -> str:
    return hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


def _existing(out: Path, job_id: str, overwrite: bool) -> dict | None:
    """The manifest to resume (same job), or None to start afresh."""
    path = out / shards.MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        m = {}
    if not isinstance(m, dict) or m.get("format") != shards.FORMAT:
        raise UserError(f"--out '{out}' holds a {shards.MANIFEST} that is not a jaxdepth "
                        "preparation's; use another --out")
    if m.get("job_id") == job_id:
        return m
    if not overwrite:
        raise UserError(f"--out '{out}' holds another preparation (other sources, tokenizer or "
                        "options); use another --out, or --overwrite to replace it")
    for f in out.glob("*.bin"):
        f.unlink()
    path.unlink()
    return None


def _check_out(out: Path, sources: list[str]) -> None:
    """The shards must not land among the documents they are made from."""
    for src in sources:
        p = Path(src).expanduser().resolve() if src not in EMBEDDED else None
        if p is not None and (out == p or p in out.parents or out in p.parents):
            raise UserError(f"--out '{out}' overlaps the source '{src}'; write the shards "
                            "outside every source")


@contextlib.contextmanager
def _locked(out: Path):
    """One preparation of a directory at a time (several processes of one host may start
    the same one: the later ones wait, then find it finished)."""
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_shard(out: Path, name: str, ids: np.ndarray) -> None:
    tmp = out / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        ids.tofile(f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the manifest lists it
    os.replace(tmp, out / name)


def prepare(sources: Sequence[str], out: str | Path, *, tokenizer: str = "byte",
            bpe_vocab_size: int = 2048, text_field: str = "text",
            val_sources: Sequence[str] = (), val_fraction: float = 0.05,
            workers: int | None = None, shard_bytes: int = SHARD_BYTES, utf8: str = "replace",
            eos: str | int | None = None, bos: str | int | None = None,
            progress: bool | None = None, overwrite: bool = False) -> dict:
    """Tokenize `sources` into `out` (see the module docstring); returns the manifest.
    `workers`: tokenizing processes (default: this machine's cores; 0 tokenizes in this
    process). `progress`: a bar with tokens/s (None: only on a terminal)."""
    if not sources:
        raise UserError("prepare needs at least one source (a file, directory, glob or 'stdlib')")
    if not 0.0 < val_fraction < 1.0 and not val_sources:
        raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if shard_bytes < 1:
        raise UserError(f"--shard-mb must be positive, got {shard_bytes} bytes")
    sources, val_sources = expand_sources(sources), expand_sources(val_sources)
    if both := sorted(set(sources) & set(val_sources)):
        raise UserError(f"'{both[0]}' is both a source and a --val-source; give each file once")
    _check_out(Path(out).expanduser().resolve(), sources + val_sources)
    workers = default_workers() if workers is None else workers
    job = _job(sources, val_sources, tokenizer, bpe_vocab_size, text_field, val_fraction,
               shard_bytes, utf8, eos, bos)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _prepare_locked(out, job, bpe_vocab_size, workers, progress, overwrite)


def _prepare_locked(out, job, bpe_vocab_size, workers, progress, overwrite) -> dict:
    job_id = _job_id(job)
    m = _existing(out, job_id, overwrite)
    if m is not None and m.get("complete"):
        return m
    sources = [s["source"] for s in job["sources"]]
    val_sources = [s["source"] for s in job["val_sources"]]
    mode = "train" if val_sources else "hash"
    vf = job["val_fraction"] or 0.0
    text_field, utf8 = job["text_field"], job["utf8"]
    if m is not None:  # resume: the tokenizer (trained or not) is the one already saved
        t = m["tokenizer"]
        tok = from_saved(t["kind"], t["spec"], out, t["eos_id"], t["bos_id"], t["pad_id"])
    else:
        def train_texts():
            return (text for src in sources
                    for key, text in iter_docs(src, text_field, utf8)
                    if mode == "train" or not is_validation(key, vf))
        tok = load_tokenizer(job["tokenizer"], bpe_vocab_size=bpe_vocab_size,
                             train_texts=train_texts, eos=job["eos"], bos=job["bos"])
        tok.save(out / "tokenizer.json")
        m = dict(format=shards.FORMAT, job_id=job_id, complete=False, job=job,
                 tokenizer=dict(kind=tok.kind, spec=tok.spec, identity=tok.identity,
                                vocab_size=tok.vocab_size, eos_id=tok.eos_id, bos_id=tok.bos_id,
                                pad_id=tok.pad_id),
                 dtype=shards.token_dtype(tok.vocab_size).name, chunks_done=0, shards=[])
        write_json(out / shards.MANIFEST, m, indent=1)
    stats = TextStats()
    chunks = _chunks(sources, text_field, utf8, stats, mode, job["shard_bytes"])
    if val_sources:
        chunks = itertools.chain(chunks, _chunks(val_sources, text_field, utf8, stats, "val",
                                        job["shard_bytes"]))
    done = m["chunks_done"]
    todo = (c for i, c in enumerate(chunks) if i >= done)  # earlier chunks: read, not encoded
    bar = tqdm(desc=f"prepare {out.name}", unit="tok", unit_scale=True, dynamic_ncols=True,
               disable=None if progress is None else not progress,
               initial=sum(s["tokens"] for s in m["shards"]))
    try:
        for i, enc in enumerate(_encoded(todo, tok, vf, workers), start=done):
            for split, o in enc.items():
                if len(o["ids"]):
                    name = f"{split}-{i:05d}.bin"
                    _write_shard(out, name, o["ids"])
                    m["shards"].append(dict(file=name, split=split, tokens=len(o["ids"]),
                                            docs=o["docs"], bytes=o["bytes"]))
                    bar.update(len(o["ids"]))
            m["chunks_done"] = i + 1
            write_json(out / shards.MANIFEST, m, indent=1)
    finally:
        bar.close()
    return _finish(out, m, stats, utf8, sources + val_sources)


def _finish(out: Path, m: dict, stats: TextStats, utf8: str, sources: list) -> dict:
    totals = {s: {k: sum(x[k] for x in m["shards"] if x["split"] == s)
                  for k in ("tokens", "docs", "bytes")} for s in shards.SPLITS}
    if totals["train"]["docs"] + totals["val"]["docs"] == 0:
        raise UserError(f"'{', '.join(sources)}' holds no text (an empty corpus: no document "
                        "with text)")
    for t in totals.values():
        t["bytes_per_token"] = t["bytes"] / t["tokens"] if t["tokens"] else None
    m.update(totals=totals, text=dict(utf8=utf8, **stats.as_dict()), complete=True)
    write_json(out / shards.MANIFEST, m, indent=1)
    return m
