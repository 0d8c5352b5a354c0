"""Prepared corpora: shards and manifest, parallel = serial, resume, memory-mapped reading,
the tokenizer check, process shards, bits per byte, and every bad input's one-line error."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from jaxdepth import cli
from jaxdepth.config import DataConfig
from jaxdepth.data import prepare as prep
from jaxdepth.data import shards
from jaxdepth.data.pipeline import load_corpus, train_dataset
from jaxdepth.data.sources import is_validation
from jaxdepth.data.tokenizers import load_tokenizer
from jaxdepth.errors import UserError

_RNG = np.random.default_rng(0)  # random words: no two 17-byte windows are alike
DOCS = [f"doc {i}: " + " ".join(map(str, _RNG.integers(0, 10**6, 8 + i % 5)))
        for i in range(120)]


@pytest.fixture(scope="module")
def corpus_gz(tmp_path_factory):
    """A gzipped JSONL corpus of 120 documents."""
    p = tmp_path_factory.mktemp("src") / "c.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        for d in DOCS:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    return p


@pytest.fixture(scope="module")
def prepared(corpus_gz, tmp_path_factory):
    """The corpus prepared in this process with small shards (several chunks)."""
    out = tmp_path_factory.mktemp("prep") / "byte"
    prep.prepare([str(corpus_gz)], out, workers=0, shard_bytes=1500, val_fraction=0.2,
                 progress=False)
    return out


def stream(out, split):
    m = shards.read_manifest(out)
    s = shards.open_split(out, m, split)
    return s.read(0, len(s))


def test_shards_hold_every_document_once_with_eos(prepared, corpus_gz):
    m = shards.read_manifest(prepared)
    assert m["complete"] and m["dtype"] == "uint16" and m["tokenizer"]["kind"] == "byte"
    assert len([s for s in m["shards"] if s["split"] == "train"]) > 3  # several chunks
    for split, val in (("train", False), ("val", True)):
        docs = [(f"c.jsonl:{i + 1}", d) for i, d in enumerate(DOCS)]  # compression dropped
        want = [d for k, d in docs if is_validation(k, 0.2) == val]
        ids = stream(prepared, split)
        text = [bytes(x.astype(np.uint8)).decode() for x in np.split(ids, np.flatnonzero(
            ids == 256) + 1)[:-1]]  # split after each EOS
        assert [t[:-1] for t in text] == want
        t = m["totals"][split]
        assert t["docs"] == len(want) and t["tokens"] == len(ids)
        assert t["bytes"] == sum(len(d.encode()) for d in want)
    for s in m["shards"]:  # a flat file of tokens, readable with np.memmap alone
        assert len(np.memmap(prepared / s["file"], np.uint16, mode="r")) == s["tokens"]


def test_worker_processes_write_the_same_shards(prepared, corpus_gz, tmp_path):
    out = tmp_path / "par"
    prep.prepare([str(corpus_gz)], out, workers=2, shard_bytes=1500, val_fraction=0.2,
                 progress=False)
    a, b = shards.read_manifest(prepared), shards.read_manifest(out)
    assert a["shards"] == b["shards"]
    for s in a["shards"]:
        assert (prepared / s["file"]).read_bytes() == (out / s["file"]).read_bytes()


def test_interrupted_prepare_resumes_and_keeps_finished_shards(prepared, corpus_gz, tmp_path,
                                                               monkeypatch):
    out, real = tmp_path / "int", prep._encode_chunk
    calls = []

    def dies_at_third(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(prep, "_encode_chunk", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare([str(corpus_gz)], out, workers=0, shard_bytes=1500, val_fraction=0.2,
                     progress=False)
    m = json.loads((out / shards.MANIFEST).read_text())
    assert not m["complete"] and m["chunks_done"] == 2
    with pytest.raises(UserError, match="did not finish.*resume"):
        shards.read_manifest(out)
    first = out / m["shards"][0]["file"]
    mtime = first.stat().st_mtime_ns
    monkeypatch.setattr(prep, "_encode_chunk", real)
    prep.prepare([str(corpus_gz)], out, workers=0, shard_bytes=1500, val_fraction=0.2,
                 progress=False)
    assert first.stat().st_mtime_ns == mtime  # kept, not rewritten
    np.testing.assert_array_equal(stream(out, "train"), stream(prepared, "train"))
    np.testing.assert_array_equal(stream(out, "val"), stream(prepared, "val"))


def test_val_source_holds_out_every_document_of_it(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(DOCS[:60]))
    (tmp_path / "b.txt").write_text("\n\n".join(DOCS[60:]))
    m = prep.prepare([str(tmp_path / "a.txt")], tmp_path / "o", val_sources=[str(tmp_path / "b.txt")],
                     workers=0, progress=False)
    assert m["totals"]["train"]["docs"] == 60 and m["totals"]["val"]["docs"] == 60


def test_windows_cross_shards_and_processes_split_an_epoch(prepared):
    """Window i is tokens [iT, iT+T+1) of the concatenated shards; two processes' windows
    are disjoint and together are the one-process epoch."""
    m = shards.read_manifest(prepared)
    s = shards.open_split(prepared, m, "train")
    whole, T = s.read(0, len(s)), 16
    w = shards.Windows(s, T)
    for i in range(len(w)):
        np.testing.assert_array_equal(w[i], whole[i * T:i * T + T + 1])
    c = DataConfig(source=str(prepared), seq_len=T, batch_size=4)
    corpus = load_corpus(c)
    n = len(w) // c.batch_size  # global batches in one epoch
    one = np.concatenate([train_dataset(corpus, c)[k]["tokens"] for k in range(n)])
    parts = [np.concatenate([train_dataset(corpus, c, p, 2)[k]["tokens"] for k in range(n)])
             for p in range(2)]
    rows = lambda a: [r.tobytes() for r in a]  # noqa: E731
    assert not set(rows(parts[0])) & set(rows(parts[1]))
    assert sorted(rows(parts[0]) + rows(parts[1])) == sorted(rows(one))
    assert len(set(rows(one))) == len(one)  # an epoch: no window twice


def test_two_processes_read_disjoint_windows(prepared, tmp_path):
    """The same in two real processes, each opening the shards itself."""
    code = ("import sys, numpy as np; from jaxdepth.config import DataConfig; "
            "from jaxdepth.data.pipeline import load_corpus, train_dataset; "
            "c = DataConfig(source=sys.argv[1], seq_len=16, batch_size=4); "
            "p = int(sys.argv[2]); ds = train_dataset(load_corpus(c), c, p, 2); "
            "np.save(sys.argv[3], np.concatenate([ds[k]['tokens'] for k in range(5)]))")
    outs = [tmp_path / f"p{p}.npy" for p in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(prepared), str(p), str(o)])
             for p, o in enumerate(outs)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    c = DataConfig(source=str(prepared), seq_len=16, batch_size=4)
    one = np.concatenate([train_dataset(load_corpus(c), c)[k]["tokens"] for k in range(5)])
    got = [np.load(o) for o in outs]
    assert sorted(r.tobytes() for g in got for r in g) == sorted(r.tobytes() for r in one)


def test_pretrained_tokenizer_from_file(corpus_gz, tmp_path):
    """A BPE trained here, saved as tokenizer.json with a tokenizer_config.json, prepares a
    corpus as a pretrained tokenizer; the config must name the same tokenizer."""
    tok = load_tokenizer("bpe:300", train_texts=lambda: iter(DOCS))
    tdir = tmp_path / "tok"
    tdir.mkdir()
    tok.save(tdir / "tokenizer.json")
    (tdir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eos|>"}))
    out = tmp_path / "bpe"
    m = prep.prepare([str(corpus_gz)], out, tokenizer=str(tdir), workers=0, val_fraction=0.2,
                     progress=False)
    assert m["tokenizer"]["kind"] == "pretrained" and m["tokenizer"]["eos_id"] == tok.eos_id
    ids = stream(out, "train")
    assert (ids == tok.eos_id).sum() == m["totals"]["train"]["docs"]
    assert m["totals"]["train"]["bytes_per_token"] > 1.2  # BPE merges bytes (byte-level: < 1)
    c = DataConfig(source=str(out), tokenizer=str(tdir / "tokenizer.json"), seq_len=16,
                   batch_size=4)
    corpus = load_corpus(c)
    assert corpus.tokenizer.vocab_size == tok.vocab_size
    np.testing.assert_array_equal(corpus.tokenizer.encode(DOCS[0]), tok.encode(DOCS[0]))
    with pytest.raises(UserError, match="prepared with tokenizer .*data.tokenizer is 'byte'"):
        load_corpus(DataConfig(source=str(out), seq_len=16, batch_size=4))


def test_bits_per_byte():
    assert shards.bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert shards.bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / math.log(2) / 4.0)


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_bad_prepared_dirs(prepared, corpus_gz, tmp_path):
    c = lambda d: DataConfig(source=str(d), seq_len=16, batch_size=4)  # noqa: E731
    half = _copy(prepared, tmp_path / "half")
    shard = half / shards.read_manifest(half)["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-6])
    with pytest.raises(UserError, match=f"shard '.*{shard.name}' holds .*half-written"):
        load_corpus(c(half))
    empty = _copy(prepared, tmp_path / "empty")
    m = json.loads((empty / shards.MANIFEST).read_text())
    m["shards"][0]["tokens"] = 0
    (empty / shards.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match="empty shard"):
        load_corpus(c(empty))
    with pytest.raises(UserError, match="holds another preparation.*--overwrite"):
        prep.prepare([str(corpus_gz)], prepared, tokenizer="bpe:300", workers=0, progress=False)


@pytest.mark.parametrize("args, words", [
    (["{tmp}/nothing-*.jsonl"], ["nothing-*.jsonl"]),
    (["{tmp}/c.jsonl", "--text-field", "body"], ["c.jsonl:1", "no field 'body'"]),
    (["{tmp}/c.jsonl", "--tokenizer", "{tmp}/notok.json"], ["notok.json"]),
    (["{tmp}/c.jsonl", "--tokenizer", "{tmp}/noeos"], ["no EOS", "--eos-token"]),
    (["{tmp}/z.jsonl"], ["z.jsonl", "compressed"]),
])
def test_cli_prepare_bad_input_is_one_line(tmp_path, capsys, args, words):
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    (tmp_path / "z.jsonl").write_bytes(b"PK\x03\x04" + b"\0" * 40)  # a zip named .jsonl
    (tmp_path / "noeos").mkdir()
    load_tokenizer("bpe:300", train_texts=lambda: iter(DOCS)).save(
        tmp_path / "noeos" / "tokenizer.json")  # specials <|eos|>, <|pad|>: no known EOS name
    rc = cli.main(["prepare", *[a.format(tmp=tmp_path) for a in args], "--out",
                   str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def test_cli_prepare_prints_the_summary(corpus_gz, tmp_path, capsys):
    assert cli.main(["prepare", str(corpus_gz), "--out", str(tmp_path / "o"), "--workers", "0",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bytes/token" in out and "tokens/s" in out and f"data.source={tmp_path / 'o'}" in out


def test_streams_past_the_open_descriptor_limit_read_the_same(prepared, monkeypatch):
    m = shards.read_manifest(prepared)
    whole = stream(prepared, "train")
    monkeypatch.setattr(shards, "MAX_OPEN", 1)  # shards past the first: opened per read
    s = shards.open_split(prepared, m, "train")
    np.testing.assert_array_equal(s.read(0, len(s)), whole)
    assert len(s._fds) == 1


def test_out_inside_a_source_or_a_source_twice_is_refused(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello world")
    with pytest.raises(UserError, match="overlaps the source"):
        prep.prepare([str(tmp_path / "docs")], tmp_path / "docs" / "out", workers=0)
    with pytest.raises(UserError, match="both a source and a --val-source"):
        prep.prepare([str(tmp_path / "docs")], tmp_path / "o", workers=0,
                     val_sources=[str(tmp_path / "docs")])
