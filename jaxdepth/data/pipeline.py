"""grain pipeline: a prepared corpus (memory-mapped token shards) -> packed windows ->
shuffle -> batch, deterministic from a seed, sharded by JAX process, with a checkpointable
iterator. A raw source (the embedded corpus, a text file, a directory, JSONL, ...) is
prepared into the cache on first use, so every run reads through the same path."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from jaxdepth.data import shards
from jaxdepth.data.shards import TokenStream, Windows, num_windows, window
from jaxdepth.data.sources import source_fingerprint
from jaxdepth.data.tokenizers import from_saved, parse_spec, pretrained_identity
from jaxdepth.errors import UserError


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus's two splits as token streams (an EOS after every document;
    documents never straddle the split), its tokenizer and where it lives."""

    train: TokenStream
    val: TokenStream
    tokenizer: object
    directory: Path

    @property
    def n_train_docs(self) -> int:
        return self.train.n_docs

    @property
    def n_val_docs(self) -> int:
        return self.val.n_docs


def cache_dir(dcfg) -> Path:
    d = Path(dcfg.cache_dir or os.environ.get("JAXDEPTH_CACHE", "~/.cache/jaxdepth")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def prepared_dir(dcfg) -> Path:
    """`data.source` itself when it is a prepared directory; else the cache directory that
    the raw source is prepared into (keyed by its contents, tokenizer, split and field)."""
    if shards.is_prepared(dcfg.source):
        return Path(dcfg.source).expanduser()
    kind, arg = parse_spec(dcfg.tokenizer, dcfg.bpe_vocab_size)
    tok_key = pretrained_identity(arg) if kind == "pretrained" else f"{kind}{arg}"
    key = hashlib.sha1(f"{shards.FORMAT}|{source_fingerprint(dcfg.source)}|{tok_key}|"
                       f"{dcfg.val_fraction}|{dcfg.text_field}".encode()).hexdigest()[:16]
    return cache_dir(dcfg) / f"prepared-{key}"


def load_corpus(dcfg, progress: bool | None = False) -> Corpus:
    """The corpus `dcfg` names, prepared on first use (tokenized in this process; later
    runs open the shards in well under a second). Nothing is read into memory."""
    d = prepared_dir(dcfg)
    if d != Path(dcfg.source).expanduser() and not shards.is_complete(d):
        from jaxdepth.data.prepare import prepare

        prepare([dcfg.source], d, tokenizer=dcfg.tokenizer, bpe_vocab_size=dcfg.bpe_vocab_size,
                text_field=dcfg.text_field, val_fraction=dcfg.val_fraction, workers=0,
                progress=progress)
    m = shards.read_manifest(d)
    check_tokenizer(m, dcfg, d)
    t = m["tokenizer"]
    tok = from_saved(t["kind"], t["spec"], d, t["eos_id"], t["bos_id"], t["pad_id"])
    corpus = Corpus(shards.open_split(d, m, "train"), shards.open_split(d, m, "val"), tok, d)
    check_corpus(corpus, dcfg)
    return corpus


def check_tokenizer(manifest: dict, dcfg, directory: Path) -> None:
    """A prepared corpus must have been made with the tokenizer the config asks for."""
    t = manifest["tokenizer"]
    kind, arg = parse_spec(dcfg.tokenizer, dcfg.bpe_vocab_size)
    if kind == "pretrained":
        same = t["kind"] == "pretrained" and t["identity"] == pretrained_identity(arg)
    else:
        same = t["kind"] == kind and t["spec"] == (f"bpe:{arg}" if kind == "bpe" else kind)
    if not same:  # a pretrained tokenizer's copy in the directory has the same identity
        right = directory if t["kind"] == "pretrained" else t["spec"]
        raise UserError(
            f"'{directory}' was prepared with tokenizer '{t['spec']}' ({t['identity']}), but "
            f"data.tokenizer is '{dcfg.tokenizer}'; set data.tokenizer={right} or prepare "
            f"again with --tokenizer {dcfg.tokenizer}")


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
    ds = (grain.MapDataset.source(Windows(corpus.train, dcfg.seq_len))
          .shuffle(seed=dcfg.seed)
          .repeat(None)
          .map(lambda w: {"tokens": w}))
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
    windows = np.stack([window(corpus.val, T, int(i)) for i in idx]).reshape(n_batches, B, T + 1)
    b = per_process_batch(B, process_count)
    return windows[:, process_index * b:(process_index + 1) * b]


@dataclass(frozen=True)
class CorpusData:
    """A prepared corpus as the train loop reads it (`load_data`; a task's is
    `jaxdepth.data.tasks.stream.TaskData`)."""

    corpus: Corpus
    dcfg: object

    @property
    def tokenizer(self):
        return self.corpus.tokenizer

    def bytes_per_token(self, split: str) -> float:
        return getattr(self.corpus, split).bytes_per_token

    def train_iterator(self, process_index: int = 0, process_count: int = 1):
        return train_iterator(self.corpus, self.dcfg, process_index, process_count)

    def val_batches(self, n_batches: int, process_index: int = 0,
                    process_count: int = 1) -> list[dict]:
        return [{"tokens": v} for v in val_batches(self.corpus, self.dcfg, n_batches,
                                                   process_index, process_count)]


def load_data(dcfg, progress: bool | None = False):
    """The training data `dcfg` names: a synthetic task (`data.task`, generated on the fly)
    or a corpus (prepared on first use), each with `tokenizer`, `train_iterator(p, n)`,
    `val_batches(k, p, n)` (a list of batch dicts) and `bytes_per_token(split)` (None for
    a task: bits per byte mean nothing there)."""
    if dcfg.task:
        from jaxdepth.data.tasks.stream import load_task

        return load_task(dcfg)
    return CorpusData(load_corpus(dcfg, progress), dcfg)
