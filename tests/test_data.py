"""Data: sources, split by document, determinism, resumed iterators, process sharding."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxdepth.config import DataConfig
from jaxdepth.data.pipeline import load_corpus, train_dataset, train_iterator, val_batches
from jaxdepth.data.sources import is_validation, iter_docs, stdlib_docs
from jaxdepth.errors import UserError


def dcfg(tmp_path, **kw):
    return DataConfig(cache_dir=str(tmp_path / "cache"), **{"seq_len": 16, "batch_size": 4, **kw})


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    return load_corpus(DataConfig(seq_len=16, batch_size=4))


def take(it, n):
    return [next(it)["tokens"] for _ in range(n)]


def test_stdlib_corpus_split_by_file(stdlib_corpus):
    docs = list(stdlib_docs())
    assert [k for k, _ in docs] == sorted(k for k, _ in docs)
    keys = [k for k, text in docs if text]  # empty files (e.g. bare __init__.py) are skipped
    assert len(keys) > 500
    val = [k for k in keys if is_validation(k, 0.05)]
    assert 0 < len(val) < 0.15 * len(keys)
    assert stdlib_corpus.n_val_docs == len(val)
    assert stdlib_corpus.n_train_docs + stdlib_corpus.n_val_docs == len(keys)
    eos = stdlib_corpus.tokenizer.eos_id
    val_ids = stdlib_corpus.val.read(0, len(stdlib_corpus.val))
    assert int((val_ids == eos).sum()) == len(val)  # one EOS per document


def test_deterministic_from_seed(stdlib_corpus):
    c = DataConfig(seq_len=16, batch_size=4)
    a = take(train_iterator(stdlib_corpus, c), 3)
    b = take(train_iterator(stdlib_corpus, c), 3)
    d = take(train_iterator(stdlib_corpus, DataConfig(seq_len=16, batch_size=4, seed=1)), 3)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(d))
    assert a[0].shape == (4, 17) and a[0].dtype == np.int32


def test_resumed_iterator_continues_exactly(stdlib_corpus):
    c = DataConfig(seq_len=16, batch_size=4)
    it = train_iterator(stdlib_corpus, c)
    take(it, 5)
    state = it.get_state()
    expected = take(it, 3)
    fresh = train_iterator(stdlib_corpus, c)
    fresh.set_state(json.loads(json.dumps(state)))  # survives a JSON round trip
    np.testing.assert_array_equal(np.stack(take(fresh, 3)), np.stack(expected))


def test_process_shards_partition_the_global_batch(stdlib_corpus):
    c = DataConfig(seq_len=16, batch_size=4)
    whole = train_dataset(stdlib_corpus, c)[2]["tokens"]
    parts = [train_dataset(stdlib_corpus, c, p, 2)[2]["tokens"] for p in range(2)]
    assert parts[0].shape == (2, 17)
    rows = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert rows(np.concatenate(parts)) == rows(whole)
    with pytest.raises(UserError, match="divisible by the number of processes"):
        train_dataset(stdlib_corpus, c, 0, 3)


def test_val_batches_fixed_and_held_out(stdlib_corpus):
    c = DataConfig(seq_len=16, batch_size=4)
    v = val_batches(stdlib_corpus, c, 2)
    assert v.shape == (2, 4, 17)
    np.testing.assert_array_equal(v, val_batches(stdlib_corpus, c, 2))


def test_short_validation_split_never_counts_a_window_twice(tmp_path):
    """A validation split of n windows gives n // B batches (with a warning) when fewer than
    eval_batches x B exist, every window once; under one batch it is a UserError."""
    (tmp_path / "docs").mkdir()
    for i in range(40):  # every window's text is unique, so a repeat would show
        (tmp_path / "docs" / f"{i}.txt").write_text("".join(f"d{i}w{j} " for j in range(40)))
    c = dcfg(tmp_path, source=str(tmp_path / "docs"), val_fraction=0.2)
    corpus = load_corpus(c)
    n = (len(corpus.val) - 1) // c.seq_len
    assert 2 * c.batch_size <= n < 50 * c.batch_size, n
    with pytest.warns(UserWarning, match=f"enough for {n // c.batch_size} batches"):
        v = val_batches(corpus, c, 50)
    assert v.shape == (n // c.batch_size, c.batch_size, c.seq_len + 1)
    flat = v.reshape(-1, c.seq_len + 1)
    assert len({w.tobytes() for w in flat}) == len(flat)
    big = dataclasses.replace(c, batch_size=n + 1)
    with pytest.raises(UserError, match="fewer than one batch"):
        val_batches(corpus, big, 1)


def test_user_sources(tmp_path):
    (tmp_path / "docs").mkdir()
    for i in range(40):
        (tmp_path / "docs" / f"{i}.txt").write_text(f"document {i} " * 20)
    c = load_corpus(dcfg(tmp_path, source=str(tmp_path / "docs"), val_fraction=0.2))
    assert c.n_train_docs + c.n_val_docs == 40 and c.n_val_docs > 0
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"body": f"row {i} " * 30}) + "\n" for i in range(30)))
    c = load_corpus(dcfg(tmp_path, source=str(jl), text_field="body", val_fraction=0.2))
    assert c.n_train_docs + c.n_val_docs == 30
    txt = tmp_path / "t.txt"
    txt.write_text("\n\n".join(f"paragraph {i} " * 10 for i in range(30)))
    assert len(list(iter_docs(str(txt)))) == 30


def test_bpe_tokenizer_trains_and_round_trips(tmp_path):
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x + {i}\n" * 5}) + "\n"
                          for i in range(60)))
    c = load_corpus(dcfg(tmp_path, source=str(jl), tokenizer="bpe", bpe_vocab_size=300,
                         val_fraction=0.2))
    tok = c.tokenizer
    assert 256 < tok.vocab_size <= 300
    text = "def f3(x):\n    return x + 3\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text.encode())
    assert len(list((tmp_path / "cache").glob("prepared-*/tokenizer.json"))) == 1  # cached


@pytest.mark.parametrize("setup, words", [
    ("empty", ["holds no text", "empty corpus"]),
    ("short", ["shorter than one sequence", "data.seq_len + 1 = 17"]),
    ("nofield", ["no field 'text'", "data.text_field", "body"]),
])
def test_bad_sources(tmp_path, setup, words):
    if setup == "empty":
        (tmp_path / "empty").mkdir()
        src = tmp_path / "empty"
    elif setup == "short":
        src = tmp_path / "s.txt"
        src.write_text("tiny")
    else:
        src = tmp_path / "n.jsonl"
        src.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UserError) as e:
        load_corpus(dcfg(tmp_path, source=str(src)))
    for w in words:
        assert w in str(e.value), (w, str(e.value))
