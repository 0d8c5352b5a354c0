"""grain pipeline: documents -> tokens (cached) -> packed windows -> shuffle -> batch,
deterministic from a seed, sharded by JAX process, with a checkpointable iterator."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from jaxdepth.data.sources import is_validation, iter_docs, source_signature
from jaxdepth.data.tokenizers import BPETokenizer, ByteTokenizer
from jaxdepth.errors import UserError


@dataclass(frozen=True)
class Corpus:
    """Token streams with an EOS after every document (documents never straddle the split)."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    n_train_docs: int
    n_val_docs: int


def cache_dir(dcfg) -> Path:
    d = Path(dcfg.cache_dir or os.environ.get("JAXDEPTH_CACHE", "~/.cache/jaxdepth")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def _encode_docs(docs, tokenizer, val_fraction):
    streams = {True: [], False: []}
    counts = {True: 0, False: 0}
    eos = np.asarray([tokenizer.eos_id], np.int32)
    for key, text in docs:
        if not text:
            continue
        v = is_validation(key, val_fraction)
        streams[v] += [tokenizer.encode(text), eos]
        counts[v] += 1
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    cat = lambda xs: np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)  # noqa: E731
    return cat(streams[False]), cat(streams[True]), counts[False], counts[True]


def load_corpus(dcfg) -> Corpus:
    """Tokenize the source once and cache it, keyed by source contents (Python version
    for the embedded corpus), tokenizer and split; later runs load in well under a second."""
    sig = source_signature(dcfg.source)
    tok_key = "byte" if dcfg.tokenizer == "byte" else f"bpe{dcfg.bpe_vocab_size}"
    key = hashlib.sha1(f"{sig}|{tok_key}|{dcfg.val_fraction}|{dcfg.text_field}".encode()).hexdigest()[:16]
    d = cache_dir(dcfg)
    path, tok_path = d / f"corpus-{key}.npz", d / f"tokenizer-{key}.json"
    if dcfg.tokenizer == "byte":
        tokenizer = ByteTokenizer()
    elif tok_path.exists():
        tokenizer = BPETokenizer.load(tok_path)
    else:
        texts = (t for k, t in iter_docs(dcfg.source, dcfg.text_field)
                 if not is_validation(k, dcfg.val_fraction))
        tokenizer = BPETokenizer.train(texts, dcfg.bpe_vocab_size)
        tokenizer.save(tok_path)
    if path.exists():
        z = np.load(path)
        corpus = Corpus(z["train"], z["val"], tokenizer, int(z["n_train"]), int(z["n_val"]))
    else:
        train, val, nt, nv = _encode_docs(iter_docs(dcfg.source, dcfg.text_field), tokenizer,
                                          dcfg.val_fraction)
        corpus = Corpus(train, val, tokenizer, nt, nv)
        if nt and nv:  # cache only usable corpora; write atomically
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, train=train, val=val, n_train=nt, n_val=nv)
            os.replace(tmp, path)
    check_corpus(corpus, dcfg)
    return corpus


def check_corpus(corpus: Corpus, dcfg) -> None:
    need = dcfg.seq_len + 1
    if corpus.n_train_docs + corpus.n_val_docs == 0:
        raise UserError(f"data.source '{dcfg.source}' holds no text (empty corpus)")
    for split, stream, n in (("train", corpus.train, corpus.n_train_docs),
                             ("validation", corpus.val, corpus.n_val_docs)):
        if len(stream) < need:
            raise UserError(
                f"the {split} split of '{dcfg.source}' has {len(stream)} tokens in {n} documents, "
                f"shorter than one sequence (data.seq_len + 1 = {need}); use more text, a smaller "
                "data.seq_len" + (", or a larger data.val_fraction" if split == "validation" else ""))


def num_windows(stream: np.ndarray, seq_len: int) -> int:
    return (len(stream) - 1) // seq_len


def _window(stream: np.ndarray, seq_len: int, i) -> np.ndarray:
    """Packed sequence i: seq_len + 1 tokens (inputs and shifted targets), documents
    concatenated with EOS between them (GPT-2 style packing)."""
    return stream[i * seq_len: i * seq_len + seq_len + 1].astype(np.int32)


def per_process_batch(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise UserError(
            f"data.batch_size ({batch_size}) must be divisible by the number of processes "
            f"({process_count})")
    return batch_size // process_count


def train_dataset(corpus: Corpus, dcfg, process_index: int = 0, process_count: int = 1):
    """grain MapDataset of this process's batches `{"tokens": int32 (b, S)}`, b = B /
    process_count rows, endless: windows reshuffled every epoch from `dcfg.seed`, then
    dealt round-robin to processes."""
    T = dcfg.seq_len
    stream = corpus.train
    ds = (grain.MapDataset.range(num_windows(stream, T))
          .shuffle(seed=dcfg.seed)
          .repeat(None)
          .map(lambda i: {"tokens": _window(stream, T, i)}))
    ds = ds[process_index::process_count]
    return ds.batch(per_process_batch(dcfg.batch_size, process_count), drop_remainder=True)


def train_iterator(corpus: Corpus, dcfg, process_index: int = 0, process_count: int = 1):
    """A checkpointable grain iterator (`get_state` / `set_state`) over `train_dataset`."""
    ds = train_dataset(corpus, dcfg, process_index, process_count)
    opts = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    return iter(ds.to_iter_dataset(read_options=opts))


def val_batches(corpus: Corpus, dcfg, n_batches: int, process_index: int = 0,
                process_count: int = 1) -> np.ndarray:
    """A fixed held-out set, int32 (C, b, S) with b = B / process_count rows per process:
    C = n_batches batches of windows spread
    evenly over the validation stream (so it samples many documents), the same at every
    evaluation. No window is counted twice: a split too short for n_batches batches gives
    fewer (with a warning), one too short for a single batch is a UserError."""
    T, B = dcfg.seq_len, dcfg.batch_size
    n = num_windows(corpus.val, T)
    if n < B:
        raise UserError(
            f"the validation split of '{dcfg.source}' holds {n} windows of data.seq_len + 1 = "
            f"{T + 1} tokens, fewer than one batch (data.batch_size = {B}); use more text, a "
            "larger data.val_fraction, or a smaller data.batch_size or data.seq_len")
    if n < n_batches * B:
        warnings.warn(
            f"the validation split holds {n} windows, enough for {n // B} batches of {B}, not "
            f"the {n_batches} asked (train.eval_batches or --batches); evaluating on "
            f"{n // B} so that no window counts twice", stacklevel=2)
        n_batches = n // B
    idx = np.linspace(0, n - 1, n_batches * B).round().astype(int)  # step >= 1: distinct
    windows = np.stack([_window(corpus.val, T, i) for i in idx]).reshape(n_batches, B, T + 1)
    b = per_process_batch(B, process_count)
    return windows[:, process_index * b:(process_index + 1) * b]
