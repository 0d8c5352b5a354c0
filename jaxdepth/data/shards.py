"""A prepared corpus on disk: flat token shards (readable with `np.memmap`) and a manifest.

`jaxdepth prepare` writes a directory holding `manifest.json` and, per split, flat shard
files of token ids (`train-00000.bin`, `val-00000.bin`, ...: uint16 when the vocabulary
fits, else uint32, documents concatenated with EOS after each). A split reads as one
token stream: window i is tokens [i T, i T + T + 1) of the concatenated shards, which may
straddle two shards. Nothing is read until a window is asked for, so a process reads only
the windows it trains on and its memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxdepth.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "jaxdepth-shards/1"
SPLITS = ("train", "val")
MAX_OPEN = 64  # shard descriptors a stream keeps open


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id of the vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def is_prepared(path: str | Path) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


def is_complete(path: str | Path) -> bool:
    try:
        return bool(json.loads((Path(path) / MANIFEST).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a finished preparation; an interrupted or foreign one is an error."""
    d = Path(directory).expanduser()
    try:
        m = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"'{d / MANIFEST}' is not readable ({type(e).__name__}); prepare the "
                        "corpus again with `jaxdepth prepare ... --out DIR`") from None
    if m.get("format") != FORMAT:
        raise UserError(f"'{d / MANIFEST}' has format {m.get('format')!r}, not {FORMAT!r}; "
                        "prepare the corpus again with this version of jaxdepth")
    if not m.get("complete"):
        raise UserError(f"'{d}' is a preparation that did not finish ({len(m['shards'])} shards "
                        "written); run the same `jaxdepth prepare` command to resume it")
    return m


class TokenStream:
    """One split's shards as one read-only stream of token ids.

    Windows are read with `os.pread` from descriptors opened lazily, not through a memory
    map: a mapping would count the page cache's large folios around every random window
    as this process's resident memory (measured: +1.3 GB after 800 windows of a 2B-token
    corpus, benchmarks/bench_data.py), while a read copies exactly the window. Picklable
    (it holds paths and sizes; each process opens the files itself), so grain may read it
    from worker processes."""

    def __init__(self, directory: Path, shards: list[dict], dtype: str):
        self.directory, self.dtype = Path(directory), np.dtype(dtype)
        self.files = [s["file"] for s in shards]
        sizes = np.asarray([s["tokens"] for s in shards], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # shard k: [starts[k], starts[k+1])
        self.n_docs = int(sum(s["docs"] for s in shards))
        self.n_bytes = int(sum(s["bytes"] for s in shards))
        self._fds: dict[int, int] = {}
        for f, n in zip(self.files, sizes):
            check_shard(self.directory / f, int(n), self.dtype)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):
        return {**self.__dict__, "_fds": {}}

    def __del__(self, _close=os.close):  # bound now: at interpreter exit `os` may be gone
        for fd in getattr(self, "_fds", {}).values():
            _close(fd)

    def _pread(self, k: int, n: int, offset: int) -> bytes:
        """n bytes of shard k; descriptors stay open for the MAX_OPEN first shards read, the
        others are opened per read (a corpus of thousands of shards stays under the
        open-file limit, and no descriptor is closed while a grain thread reads it)."""
        fd = self._fds.get(k)
        if fd is None and len(self._fds) < MAX_OPEN:
            fd = os.open(self.directory / self.files[k], os.O_RDONLY)
            if self._fds.setdefault(k, fd) != fd:  # another thread opened it first
                os.close(fd)
            fd = self._fds[k]
        if fd is not None:
            buf = os.pread(fd, n, offset)
        else:
            with open(self.directory / self.files[k], "rb", buffering=0) as f:
                buf = os.pread(f.fileno(), n, offset)
        if len(buf) != n:
            raise UserError(f"shard '{self.directory / self.files[k]}' ended early (read "
                            f"{len(buf)} of {n} bytes at {offset}): it changed after it was "
                            "checked; prepare the corpus again")
        return buf

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) as int32, across shard boundaries."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"tokens [{start}, {stop}) outside a stream of {len(self)}")
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts, size = [], self.dtype.itemsize
        while start < stop:
            lo, take = int(self.starts[k]), min(stop, int(self.starts[k + 1]))
            buf = self._pread(k, (take - start) * size, (start - lo) * size)
            parts.append(np.frombuffer(buf, self.dtype))
            start, k = take, k + 1
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per token (EOS/BOS included): bits per byte = loss / ln 2 /
        bytes_per_token, comparable across tokenizers."""
        return self.n_bytes / max(len(self), 1)


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Bits per UTF-8 byte of text from a mean loss in nats per token: loss / (ln 2 x bytes
    per token), the tokenizer-independent measure of The Pile (Gao et al. 2020, sec. 3)."""
    return loss_nats / (math.log(2) * bytes_per_token)


def check_shard(path: Path, n_tokens: int, dtype: np.dtype) -> None:
    """A shard listed in a manifest must be whole: a half-written file never reads as one."""
    if n_tokens <= 0:
        raise UserError(f"shard '{path}' is listed with {n_tokens} tokens; an empty shard means "
                        "a broken preparation: prepare the corpus again")
    try:
        size = path.stat().st_size
    except OSError:
        raise UserError(f"shard '{path}' is missing; prepare the corpus again") from None
    if size != n_tokens * dtype.itemsize:
        raise UserError(f"shard '{path}' holds {size} bytes, not the {n_tokens} x "
                        f"{dtype.itemsize} its manifest records (half-written or changed); "
                        "prepare the corpus again")


def num_windows(stream, seq_len: int) -> int:
    """Packed windows of seq_len + 1 tokens (inputs and shifted targets), stride seq_len."""
    return max((len(stream) - 1) // seq_len, 0)


def window(stream: TokenStream, seq_len: int, i: int) -> np.ndarray:
    """Packed sequence i: seq_len + 1 tokens, documents concatenated with EOS between them
    (GPT-2 style packing; Radford et al. 2019)."""
    return stream.read(i * seq_len, i * seq_len + seq_len + 1)


@dataclass(frozen=True)
class Windows:
    """grain `RandomAccessDataSource` of a stream's packed windows (`__len__`, `__getitem__`)."""

    stream: TokenStream
    seq_len: int

    def __len__(self) -> int:
        return num_windows(self.stream, self.seq_len)

    def __getitem__(self, i) -> np.ndarray:
        return window(self.stream, self.seq_len, int(i))


def open_split(directory: str | Path, manifest: dict, split: str) -> TokenStream:
    return TokenStream(Path(directory).expanduser(),
                       [s for s in manifest["shards"] if s["split"] == split], manifest["dtype"])
