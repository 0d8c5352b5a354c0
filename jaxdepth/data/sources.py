"""Where text comes from: documents as (key, text) pairs, split by document.

A source is 'stdlib' (the embedded default corpus: the Python standard library's `.py` files),
'pydoc' (embedded English prose: the Python reference manual's help topics), a file, a directory or a Hugging Face `save_to_disk` dataset; `expand_sources` globs specs into
sources, `iter_docs` streams one source's documents. A file's format is its name's suffix once
a compression suffix is stripped, one entry each in `FORMATS` (JSONL: a document per line;
Parquet: per row); other files are text: a document per paragraph, or per file in a directory
(binary files skipped, counted). gzip, zstd, bz2 and xz are read by their magic bytes, other
compressions refused. UTF-8 is decoded strictly, or with every replacement counted.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import sys
import sysconfig
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from glob import glob
from pathlib import Path
from typing import BinaryIO

from jaxdepth.errors import UserError

Doc = tuple[str, str]  # (stable key, text)
UTF8_MODES = ("replace", "strict")
SNIFF = 8192  # bytes looked at for a NUL (a binary file)

# codec: (magic, name suffixes); the bytes decide, and a name may not claim a codec they lack
CODECS = {"gzip": (b"\x1f\x8b", (".gz",)), "zstd": (b"\x28\xb5\x2f\xfd", (".zst", ".zstd")),
          "bz2": (b"BZh", (".bz2",)), "xz": (b"\xfd7zXZ\x00", (".xz",))}
REFUSED_MAGIC = {b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x04\x22\x4d\x18": "lz4",
                 b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!\x1a\x07": "rar", b"\x1f\x9d": "Unix .Z"}
REFUSED_SUFFIX = {".br": "brotli", ".sz": "snappy", ".snappy": "snappy", ".tar": "tar",
                  ".tgz": "tar", ".rar": "rar", ".Z": "Unix .Z", ".lz4": "lz4", ".zip": "zip",
                  ".7z": "7z"}
_COMPRESSED = {s for _, sufs in CODECS.values() for s in sufs}


@dataclass
class TextStats:
    """Counters a caller passes to `iter_docs`; reported in a manifest."""

    replacements: int = 0  # invalid UTF-8 sequences replaced by U+FFFD
    replaced_docs: int = 0  # documents (lines, paragraphs, files) with at least one
    skipped_files: int = 0  # binary files skipped in directories, undecodable stdlib files

    def as_dict(self) -> dict:
        return asdict(self)


_replaced = threading.local()  # replacements made by the decode running on this thread


def _count_replacement(e: UnicodeDecodeError) -> tuple[str, int]:
    _replaced.n += 1
    return "\ufffd", e.end


codecs.register_error("jaxdepth-count", _count_replacement)


@dataclass
class _Read:
    field: str
    utf8: str
    stats: TextStats

    def decode(self, data: bytes, path: Path, lineno: int) -> tuple[str, int]:
        """Text and replacement count of `data`, whose first line is line `lineno`."""
        try:
            return data.decode("utf-8"), 0
        except UnicodeDecodeError as e:
            if self.utf8 == "strict":
                line = lineno + data.count(b"\n", 0, e.start)
                col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
                raise UserError(
                    f"{path}:{line}: invalid UTF-8 at byte {col} of the line; fix the file or use "
                    "--utf8 replace (replacements are counted in the manifest)") from None
        _replaced.n = 0
        return data.decode("utf-8", "jaxdepth-count"), _replaced.n

    def count(self, replacements: int) -> None:
        if replacements:
            self.stats.replacements += replacements
            self.stats.replaced_docs += 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _has_text(text) -> bool:
    return bool(text) and not text.isspace()


def _logical(name: str) -> str:
    """A file name less its compression suffix: recompressing keeps keys (and the split)."""
    stem, suf = os.path.splitext(name)
    return stem if suf.lower() in _COMPRESSED else name


class _Refused(UserError):
    """A compression told by its magic bytes only (in a directory: skipped as binary)."""


def _zstd_open(path: Path) -> BinaryIO:
    try:
        import zstandard
    except ImportError:
        raise UserError(f"{path}: zstd-compressed; pip install zstandard to read it") from None
    f = open(path, "rb")  # noqa: SIM115 - closed by the reader
    return io.BufferedReader(
        zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True))


_OPEN = {None: lambda p: open(p, "rb"), "gzip": gzip.open, "bz2": bz2.open,  # noqa: SIM115
         "xz": lzma.open, "zstd": _zstd_open}


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    """`path` as a binary stream, decompressed as its magic bytes say; errors name it."""
    found = None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        found = next((c for c, (m, _) in CODECS.items() if head.startswith(m)), None)
        named = next((c for c, (_, sufs) in CODECS.items() if path.suffix.lower() in sufs), None)
        sufs = (path.suffix, path.suffix.lower(), Path(path.stem).suffix.lower() if named else "")
        what = next((REFUSED_SUFFIX[s] for s in sufs if s in REFUSED_SUFFIX), None)
        magic = next((w for m, w in REFUSED_MAGIC.items() if head.startswith(m)), None)
        if what or magic:
            raise (UserError if what else _Refused)(
                f"{path}: {what or magic}-compressed, which jaxdepth cannot read; decompress it, "
                "or recompress as .gz, .zst, .bz2 or .xz")
        if named and found != named:
            are = f"{found}-compressed" if found else "not"
            raise UserError(f"{path}: the name says {named}-compressed but the contents are "
                            f"{are}; rename the file or recompress it")
        with _OPEN[found](path) as f:
            yield f
    except Exception as e:  # OSError, EOFError, LZMAError, ZstdError
        if not isinstance(e, (OSError, EOFError, lzma.LZMAError)) and \
                type(e).__name__ != "ZstdError":
            raise
        raise UserError(f"{path}: cannot read it ({found or 'uncompressed'}): {_one_line(e)}") \
            from None


def stdlib_docs(stats: TextStats | None = None) -> Iterator[Doc]:
    """The Python standard library's .py sources (site-packages excluded), sorted by path;
    the few that are not UTF-8 are skipped (counted in `stats.skipped_files`)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if "site-packages" in rel or "dist-packages" in rel:
            continue
        try:
            yield rel, p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            if stats is not None:
                stats.skipped_files += 1


def pydoc_docs(stats: TextStats | None = None) -> Iterator[Doc]:
    """English prose that ships with Python: the reference manual's help topics
    (`pydoc_data.topics`, what `help("assignment")` prints), a document per topic, sorted."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"pydoc:{name}", topics[name]


# the corpora that ship with Python, by name: no file to read, nothing to download
EMBEDDED = {"stdlib": stdlib_docs, "pydoc": pydoc_docs}


def paragraph_docs(path: Path, key: str, r: _Read) -> Iterator[Doc]:
    """Paragraphs (separated by whitespace-only lines) of a text file, keyed `key:i`."""
    i, lines, replaced = 0, [], 0
    with _open(path) as f:
        head = f.read(SNIFF)
        if b"\x00" in head:
            raise UserError(f"{path}: binary (a NUL byte in its first {SNIFF} bytes), not text; "
                            "give a text, JSONL or Parquet file")
        head += b"" if head.endswith(b"\n") else f.readline()
        for lineno, raw in enumerate(itertools.chain(io.BytesIO(head), f), 1):
            s, n = r.decode(raw, path, lineno)
            if "\r" in s:
                s = s.replace("\r\n", "\n").replace("\r", "\n")
            if _has_text(s):
                lines.append(s)
                replaced += n
            elif lines:
                r.count(replaced)
                yield f"{key}:{i}", "".join(lines).removesuffix("\n")
                i, lines, replaced = i + 1, [], 0
    if lines:
        r.count(replaced)
        yield f"{key}:{i}", "".join(lines).removesuffix("\n")


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(v), type(v).__name__)


def jsonl_docs(path: Path, key: str, r: _Read) -> Iterator[Doc]:
    """A document per non-blank line, text in field `r.field`, keyed `key:lineno`."""
    with _open(path) as f:
        for lineno, raw in enumerate(f, 1):
            s, n = r.decode(raw, path, lineno)
            if lineno == 1:
                s = s.removeprefix("\ufeff")
            if not _has_text(s):
                continue
            r.count(n)
            try:
                row = json.loads(s)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"{path}:{lineno}: not valid JSON ({e.msg} at character {e.pos + 1})") from None
            if not isinstance(row, dict) or r.field not in row:
                has = (f"has: {', '.join(row)}" if isinstance(row, dict)
                       else f"is a JSON {_json_type(row)}, not an object")
                raise UserError(f"{path}:{lineno}: no field '{r.field}' (set data.text_field or "
                                f"--text-field; this line {has})")
            text = row[r.field]
            if text is not None and not isinstance(text, str):
                raise UserError(f"{path}:{lineno}: field '{r.field}' is a JSON {_json_type(text)},"
                                " not a string (set data.text_field or --text-field)")
            if _has_text(text):
                yield f"{key}:{lineno}", text


def _column(path: Path, schema, field: str):
    """Index of text column `field` in an Arrow schema; missing or not text: UserError."""
    import pyarrow as pa

    if field not in schema.names:
        raise UserError(f"{path}: no column '{field}' (set data.text_field or --text-field; "
                        f"columns: {', '.join(schema.names)})")
    t = schema.field(field).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t)):
        raise UserError(f"{path}: column '{field}' holds {t}, not strings "
                        "(set data.text_field or --text-field to a text column)")
    return schema.get_field_index(field)


def _rows(columns, key: str) -> Iterator[Doc]:
    """Documents from Arrow string arrays, keyed `key:row`; nulls and blanks skipped."""
    row = 0
    for col in columns:
        for off in range(0, len(col), 1024):
            for text in col.slice(off, 1024).to_pylist():
                if _has_text(text):
                    yield f"{key}:{row}", text
                row += 1


def parquet_docs(path: Path, key: str, r: _Read) -> Iterator[Doc]:
    """A document per row of Parquet text column `r.field`, keyed `key:row`."""
    import pyarrow.parquet as pq

    if _logical(path.name) != path.name:
        raise UserError(f"{path}: Parquet compresses internally; decompress the file")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise UserError(f"{path}: not a readable Parquet file ({_one_line(e)})") from None
    _column(path, pf.schema_arrow, r.field)
    yield from _rows((b.column(0) for b in pf.iter_batches(columns=[r.field], batch_size=1024)),
                     key)


FORMATS = {".jsonl": jsonl_docs, ".ndjson": jsonl_docs, ".parquet": parquet_docs}


def _format(path: Path):
    return FORMATS.get(os.path.splitext(_logical(path.name))[1].lower())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it as JSON ({_one_line(e)})") from None


def _is_hf(d: Path) -> bool:
    return (d / "dataset_dict.json").is_file() or \
        ((d / "state.json").is_file() and (d / "dataset_info.json").is_file())


def hf_docs(d: Path, key: str | None, r: _Read) -> Iterator[Doc]:
    """A Hugging Face `save_to_disk` Dataset (or a DatasetDict's train split): a document per
    row of text column `r.field`, keyed `key/file:row` (key None: the Dataset dir's name)."""
    import pyarrow as pa

    if (d / "dataset_dict.json").is_file():
        splits = _read_json(d / "dataset_dict.json").get("splits", [])
        if "train" not in splits:
            raise UserError(f"{d}: a Hugging Face DatasetDict without a 'train' split (splits: "
                            f"{', '.join(splits)}); point data.source at {d}/<split>")
        d, key = d / "train", key and f"{key}/train"
    key = key or d.name
    for entry in _read_json(d / "state.json").get("_data_files", []):
        p = d / entry["filename"]
        try:
            with pa.memory_map(str(p)) as src:
                try:
                    reader = pa.ipc.open_stream(src)
                    batches = iter(reader)
                except pa.ArrowInvalid:
                    src.seek(0)
                    reader = pa.ipc.open_file(src)
                    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                idx = _column(p, reader.schema, r.field)
                yield from _rows((b.column(idx) for b in batches), f"{key}/{p.name}")
        except (OSError, pa.ArrowInvalid) as e:
            raise UserError(f"{p}: not a readable Arrow file ({_one_line(e)})") from None


def _file_doc(p: Path, r: _Read) -> str | None:
    """A directory's text file as one document; None for a binary file (counted)."""
    try:
        with _open(p) as f:
            data = f.read(SNIFF)
            data += b"" if b"\x00" in data else f.read()
    except _Refused:
        data = b"\x00"
    if b"\x00" in data[:SNIFF]:
        r.stats.skipped_files += 1
        return None
    text, n = r.decode(data, p, 1)
    r.count(n)
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def dir_docs(root: Path, r: _Read) -> Iterator[Doc]:
    """Every non-hidden file under `root`, sorted: JSONL/Parquet by format (keys
    `relpath:n`), saved datasets as such, other files a document each (key: relpath)."""
    entries = []
    for d, dirs, files in os.walk(root):
        here = Path(d)
        entries += [here / n for n in dirs if not n.startswith(".") and _is_hf(here / n)]
        dirs[:] = [n for n in dirs if not n.startswith(".") and not _is_hf(here / n)]
        entries += [here / n for n in files if not n.startswith(".") and (here / n).is_file()]
    for p in sorted(entries, key=lambda p: p.relative_to(root).parts):
        rel = p.relative_to(root).as_posix()
        key = rel[: len(rel) - len(p.name)] + _logical(p.name)
        if p.is_dir():
            yield from hf_docs(p, rel, r)
        elif fmt := _format(p):
            yield from fmt(p, key, r)
        elif _has_text(text := _file_doc(p, r)):
            yield key, text


def expand_sources(specs: Sequence[str]) -> list[str]:
    """Sources named by `specs`: 'stdlib' as is, other specs `~`-expanded and globbed (sorted,
    `**` recursive); a spec naming nothing is a UserError. Order kept, duplicates dropped."""
    out, seen = [], set()
    for spec in specs:
        p = os.path.expanduser(spec)
        if spec in EMBEDDED or os.path.exists(p):
            found = [spec if spec in EMBEDDED else p]
        elif any(c in p for c in "*?["):
            found = sorted(glob(p, recursive=True))
            if not found:
                raise UserError(f"data.source '{spec}' matches no file")
        else:
            raise UserError(f"data.source '{spec}' does not exist")
        for s in found:
            real = s if s in EMBEDDED else os.path.realpath(s)
            if real not in seen:
                seen.add(real)
                out.append(s)
    return out


def iter_docs(source: str, text_field: str = "text", utf8: str = "replace",
              stats: TextStats | None = None) -> Iterator[Doc]:
    """Documents of one source ('stdlib' or a path), streamed; blank documents skipped.
    Invalid UTF-8 is an error (`utf8="strict"`) or replaced, counted in `stats`."""
    if utf8 not in UTF8_MODES:
        raise UserError(f"utf8 mode '{utf8}' is not one of: {', '.join(UTF8_MODES)}")
    r = _Read(text_field, utf8, stats if stats is not None else TextStats())
    if source in EMBEDDED:
        return ((k, t) for k, t in EMBEDDED[source](r.stats) if _has_text(t))
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"data.source '{source}' does not exist")
    if path.is_dir():
        return hf_docs(path, None, r) if _is_hf(path) else dir_docs(path, r)
    return (_format(path) or paragraph_docs)(path, _logical(path.name), r)


def source_fingerprint(source: str) -> str:
    """What identifies a source's contents for caching: the Python version for the
    embedded corpus, else path, size and mtime of every file."""
    if source in EMBEDDED:
        return f"{source}-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    path = Path(source).expanduser().resolve()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    if path.is_dir():  # what dir_docs reads: hidden files and folders (.git) do not count
        files = [f for f in files if not any(q.startswith(".") for q in f.relative_to(path).parts)]
    h = hashlib.sha1(str(path).encode())
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def is_validation(key: str, val_fraction: float) -> bool:
    """Deterministic split by document: hash the key into [0, 1)."""
    u = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    return u < val_fraction
