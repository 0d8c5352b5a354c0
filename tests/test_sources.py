"""Text sources: formats, compression, directories, saved datasets, globs, UTF-8 accounting,
and one-line errors naming the file for every bad input."""

import bz2
import gzip
import json
import lzma
import zipfile

import pytest

from jaxdepth.data import sources
from jaxdepth.data.sources import TextStats, expand_sources, iter_docs
from jaxdepth.errors import UserError

ROWS = [{"text": "first doc"}, {"text": "zweites Dokument: äöü ✓"}, {"text": None}, None,
        {"text": "   "}, {"text": "line one\nline two", "id": 7}]  # None: a blank line
JSONL = "".join((json.dumps(r, ensure_ascii=False) if r else "") + "\n" for r in ROWS)
WANT = [("d.jsonl:1", "first doc"), ("d.jsonl:2", "zweites Dokument: äöü ✓"),
        ("d.jsonl:6", "line one\nline two")]


def zstd(data: bytes) -> bytes:
    import zstandard
    half = len(data) // 2  # two frames: read across both
    c = zstandard.ZstdCompressor()
    return c.compress(data[:half]) + c.compress(data[half:])


COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".zst": zstd, ".bz2": bz2.compress,
            ".xz": lzma.compress}


def docs(path, **kw):
    return list(iter_docs(str(path), **kw))


def user_error(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_jsonl_plain_and_compressed_give_the_same_docs(tmp_path, suffix):
    p = tmp_path / f"d.jsonl{suffix}"
    p.write_bytes(COMPRESS[suffix](JSONL.encode()))
    assert docs(p) == WANT  # keys name the file less its compression suffix
    q = tmp_path / "d.ndjson"  # compression is told by the bytes, not the name
    q.write_bytes(COMPRESS[suffix](JSONL.encode()))
    assert [t for _, t in docs(q)] == [t for _, t in WANT]


def test_text_paragraphs(tmp_path):
    text = "\n\npara one\nstill one\n\n  \t\npara two\r\nmore\r\n\r\n\n\npara three"
    for name, data in (("t.txt", text.encode()), ("t.txt.gz", gzip.compress(text.encode()))):
        (tmp_path / name).write_bytes(data)
        assert docs(tmp_path / name) == [("t.txt:0", "para one\nstill one"),
                                         ("t.txt:1", "para two\nmore"), ("t.txt:2", "para three")]
    (tmp_path / "long.txt").write_text("\n\n".join(f"p{i} " + "x" * 500 for i in range(40)))
    assert [k for k, _ in docs(tmp_path / "long.txt")] == [f"long.txt:{i}" for i in range(40)]


def test_parquet(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    texts = [f"row {i}" for i in range(2500)]
    texts[3], texts[4] = None, " "
    pq.write_table(pa.table({"text": texts, "n": list(range(2500))}), p, row_group_size=1000)
    got = docs(p)
    assert len(got) == 2498 and got[:3] == [("d.parquet:0", "row 0"), ("d.parquet:1", "row 1"),
                                            ("d.parquet:2", "row 2")]
    assert got[3] == ("d.parquet:5", "row 5") and got[-1] == ("d.parquet:2499", "row 2499")
    msg = user_error(lambda: docs(p, text_field="body"))
    assert all(w in msg for w in ("d.parquet", "no column 'body'", "columns: text, n"))
    msg = user_error(lambda: docs(p, text_field="n"))
    assert all(w in msg for w in ("d.parquet", "column 'n'", "int64", "not strings"))


def test_hf_saved_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"text": ["alpha", None, "gamma"], "n": [1, 2, 3]})
    ds.save_to_disk(str(tmp_path / "ds"))
    arrow = "data-00000-of-00001.arrow"
    want = [(f"ds/{arrow}:0", "alpha"), (f"ds/{arrow}:2", "gamma")]
    assert docs(tmp_path / "ds") == want
    msg = user_error(lambda: docs(tmp_path / "ds", text_field="body"))
    assert arrow in msg and "no column 'body'" in msg and "text, n" in msg
    val = datasets.Dataset.from_dict({"text": ["held out"], "n": [0]})
    datasets.DatasetDict({"train": ds, "validation": val}).save_to_disk(str(tmp_path / "dd"))
    train = [(k.replace("ds/", "train/"), t) for k, t in want]
    assert docs(tmp_path / "dd") == train == docs(tmp_path / "dd" / "train")
    datasets.DatasetDict({"test": ds, "validation": val}).save_to_disk(str(tmp_path / "nt"))
    msg = user_error(lambda: docs(tmp_path / "nt"))
    words = ("nt", "without a 'train' split", "test, validation", "nt/<split>")
    assert all(w in msg for w in words), msg
    (tmp_path / "corpus").mkdir()  # a saved dataset inside a directory is read as one
    ds.save_to_disk(str(tmp_path / "corpus" / "ds"))
    (tmp_path / "corpus" / "a.txt").write_text("a text")
    assert docs(tmp_path / "corpus") == [("a.txt", "a text")] + want


def test_directory_mixes_formats_and_skips_binary(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "a.txt").write_text("doc a\n\nstill doc a")
    (d / "sub" / "b.md").write_text("doc b")
    (d / "sub" / "c.jsonl.gz").write_bytes(gzip.compress(JSONL.encode()))
    (d / "sub" / "e.txt.zst").write_bytes(zstd(b"doc e\r\nline 2"))
    (d / "a-b.txt").write_text("doc a-b")
    (d / "empty.txt").write_text("  \n")
    (d / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100))
    with zipfile.ZipFile(d / "report.docx", "w") as z:  # zip by its bytes only: binary
        z.writestr("word/document.xml", "<xml/>")
    (d / ".hidden.txt").write_text("hidden")
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main")
    stats = TextStats()
    got = docs(d, stats=stats)
    assert got == [("a-b.txt", "doc a-b"), ("a.txt", "doc a\n\nstill doc a"),
                   ("sub/b.md", "doc b"),
                   *[(k.replace("d.jsonl", "sub/c.jsonl"), t) for k, t in WANT],
                   ("sub/e.txt", "doc e\nline 2")]
    assert stats.as_dict() == {"replacements": 0, "replaced_docs": 0, "skipped_files": 2}
    (d / "sub" / "f.jsonl.lz4").write_bytes(b"\x04\x22\x4d\x18 data")  # named: refused
    msg = user_error(lambda: docs(d))
    assert "f.jsonl.lz4" in msg and "lz4-compressed" in msg


def test_expand_sources(tmp_path, monkeypatch):
    for name in ("a.jsonl", "b.jsonl", "sub/c.jsonl", "sub/x.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text('{"text": "x"}\n')
    t = str(tmp_path)
    got = expand_sources(["stdlib", f"{t}/*.jsonl", f"{t}/a.jsonl", f"{t}/**/*.jsonl", "stdlib"])
    assert got == ["stdlib", f"{t}/a.jsonl", f"{t}/b.jsonl", f"{t}/sub/c.jsonl"]
    monkeypatch.setenv("HOME", t)
    assert expand_sources(["~/sub", "~/s*/*.txt"]) == [f"{t}/sub", f"{t}/sub/x.txt"]
    msg = user_error(lambda: expand_sources([f"{t}/*.parquet"]))
    assert f"{t}/*.parquet" in msg and "matches no file" in msg
    msg = user_error(lambda: expand_sources([f"{t}/nope.jsonl"]))
    assert "nope.jsonl" in msg and "does not exist" in msg


def _zip_named_jsonl(p):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("d.jsonl", JSONL)


BAD = {  # name: (file name, contents or a writer, iter_docs kwargs, words the message holds)
    "zip": ("d.jsonl", _zip_named_jsonl, {}, ["d.jsonl", "zip-compressed", ".zst"]),
    "lz4": ("d.jsonl.lz4", b"\x04\x22\x4d\x18rest", {}, ["d.jsonl.lz4", "lz4-compressed"]),
    "tar": ("d.tar.gz", gzip.compress(b"x" * 600), {}, ["d.tar.gz", "tar-compressed"]),
    "brotli": ("d.txt.br", b"\x1b\x00\x00", {}, ["d.txt.br", "brotli-compressed"]),
    "not gzip": ("d.jsonl.gz", JSONL.encode(), {}, ["d.jsonl.gz", "name says gzip",
                                                     "contents are not"]),
    "zstd not xz": ("d.jsonl.xz", zstd(JSONL.encode()), {}, ["d.jsonl.xz", "zstd-compressed"]),
    "truncated": ("d.jsonl.gz", gzip.compress(JSONL.encode())[:-12], {},
                  ["d.jsonl.gz", "cannot read it (gzip)"]),
    "no field": ("d.jsonl", '{"text": "a"}\n{"body": "b", "id": 1}\n', {},
                 ["d.jsonl:2", "no field 'text'", "--text-field", "data.text_field", "body, id"]),
    "no object": ("d.jsonl", '["a"]\n', {}, ["d.jsonl:1", "no field 'text'", "JSON array"]),
    "bad json": ("d.jsonl", '{"text": "a"}\n\n{"text": "b"\n', {}, ["d.jsonl:3", "not valid JSON"]),
    "not a string": ("d.jsonl", '{"text": 3}\n', {}, ["d.jsonl:1", "'text'", "JSON number"]),
    "strict jsonl": ("d.jsonl", b'{"text": "a"}\n{"text": "b\xffc"}\n', {"utf8": "strict"},
                     ["d.jsonl:2", "invalid UTF-8 at byte 11", "--utf8 replace"]),
    "strict text": ("t.txt", b"one\n\ntwo\nt\xc3o\n", {"utf8": "strict"},
                    ["t.txt:4", "invalid UTF-8 at byte 1", "--utf8 replace"]),
    "utf8 mode": ("t.txt", b"x", {"utf8": "ignore"}, ["'ignore'", "replace, strict"]),
    "binary text": ("t.txt", b"abc\x00def", {}, ["t.txt", "binary"]),
    "bad parquet": ("d.parquet", b"not parquet", {}, ["d.parquet", "not a readable Parquet"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, case):
    name, contents, kw, words = BAD[case]
    p = tmp_path / name
    contents(p) if callable(contents) else p.write_bytes(
        contents.encode() if isinstance(contents, str) else contents)
    msg = user_error(lambda: docs(p, **kw))
    for w in words:
        assert w in msg, (w, msg)


def test_missing_path_and_missing_zstandard(tmp_path, monkeypatch):
    assert "does not exist" in user_error(lambda: docs(tmp_path / "nope.txt"))
    p = tmp_path / "d.jsonl.zst"
    p.write_bytes(zstd(JSONL.encode()))
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)
    msg = user_error(lambda: docs(p))
    assert "d.jsonl.zst" in msg and "pip install zstandard" in msg


def test_replacements_are_counted_exactly(tmp_path):
    ok = "valid \ufffd already".encode()  # a real U+FFFD in valid text is not a replacement
    lines = [b'{"text": "a\xffb\xfec"}', b'{"text": "' + ok + b'"}', b'{"text": "\xe2\x82"}']
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    stats = TextStats()
    got = docs(p, stats=stats)
    assert [t for _, t in got] == ["a\ufffdb\ufffdc", "valid \ufffd already", "\ufffd"]
    assert stats.as_dict() == {"replacements": 3, "replaced_docs": 2, "skipped_files": 0}
    t = tmp_path / "t.txt"
    t.write_bytes(b"para \xff one\nstill \xfe one\n\n" + ok + b"\n\n\xc0\xaf bad\n")
    stats = TextStats()
    assert [x for _, x in docs(t, stats=stats)] == [
        "para \ufffd one\nstill \ufffd one", "valid \ufffd already", "\ufffd\ufffd bad"]
    assert (stats.replacements, stats.replaced_docs) == (4, 2)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.txt").write_bytes(b"x\xffy\xffz")
    (d / "b.txt").write_bytes(ok)
    stats = TextStats()
    assert docs(d, stats=stats) == [("a.txt", "x\ufffdy\ufffdz"), ("b.txt", ok.decode())]
    assert (stats.replacements, stats.replaced_docs) == (2, 1)
    assert "dir/a.txt:1" in user_error(lambda: docs(d, utf8="strict"))


def test_stdlib_docs_unchanged():
    first = [d for _, d in zip(range(50), sources.stdlib_docs())]
    keys = [k for k, _ in first]
    assert keys == sorted(keys, key=lambda k: k.split("/")) and all(k.endswith(".py") for k in keys)
    via = [d for _, d in zip(range(40), iter_docs("stdlib"))]
    assert via == [d for d in first if d[1].strip()][:40]
    assert sources.source_fingerprint("stdlib").startswith("stdlib-")


def test_fingerprint_and_split(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(JSONL)
    a = sources.source_fingerprint(str(p))
    assert len(a) == 16 and a == sources.source_fingerprint(str(p))
    p.write_text(JSONL + JSONL)
    assert sources.source_fingerprint(str(p)) != a
    keys = [f"doc{i}" for i in range(2000)]
    assert 150 < sum(sources.is_validation(k, 0.1) for k in keys) < 250
