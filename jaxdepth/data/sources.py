"""Where text comes from: documents as (key, text) pairs, split by document.

Sources are one entry each in `SOURCES`: the embedded default corpus (the Python standard
library's own `.py` files, present on every machine with Python), a text file (documents
are paragraphs separated by blank lines), a directory of text files (a document per file),
or JSONL (a document per line, text in a named field).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from jaxdepth.errors import UserError

Doc = tuple[str, str]  # (stable key, text)


def stdlib_docs() -> Iterator[Doc]:
    """The Python standard library's .py sources (site-packages excluded), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if "site-packages" in rel or "dist-packages" in rel:
            continue
        try:
            yield rel, p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def text_file_docs(path: Path) -> Iterator[Doc]:
    text = path.read_text(encoding="utf-8", errors="replace")
    for i, para in enumerate(p for p in re.split(r"\n\s*\n", text) if p.strip()):
        yield f"{path.name}:{i}", para


def dir_docs(path: Path) -> Iterator[Doc]:
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        try:
            yield p.relative_to(path).as_posix(), p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def jsonl_docs(path: Path, field: str) -> Iterator[Doc]:
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or field not in row:
                keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise UserError(
                    f"{path}:{i + 1}: no field '{field}' (set data.text_field; this line has: {keys})")
            yield f"{i}", str(row[field])


def iter_docs(source: str, text_field: str = "text") -> Iterator[Doc]:
    if source == "stdlib":
        return stdlib_docs()
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"data.source '{source}' does not exist")
    if path.is_dir():
        return dir_docs(path)
    if path.suffix == ".jsonl":
        return jsonl_docs(path, text_field)
    return text_file_docs(path)


def source_signature(source: str) -> str:
    """What identifies a source's contents for caching: the Python version for the
    embedded corpus, else path, size and mtime of every file."""
    if source == "stdlib":
        return f"stdlib-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    path = Path(source).expanduser().resolve()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
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
