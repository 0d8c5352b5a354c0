"""Tokenizer registry: the byte ids are fixed; a BPE trained here, saved and read back as a
pretrained tokenizer gives the same ids; EOS/BOS come from the files beside a
tokenizer.json (GPT-2-, LLaMA-like layouts); every kind pickles and rebuilds from its
saved file. Every tokenizer is built locally (no network)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from jaxdepth.data.tokenizers import (
    KINDS,
    ByteTokenizer,
    from_saved,
    load_tokenizer,
    parse_spec,
    pretrained_identity,
)
from jaxdepth.errors import UserError

TEXTS = ["the quick brown fox jumps over the lazy dog", "héllo wörld, 1234 tokens!",
         "def f(x):\n    return x + 1\n", "  spaces\tand tabs  ", "日本語のテキスト", ""]


def train_texts():
    return TEXTS * 20


def hf_dir(tmp_path, specials, name="tok", **side_files):
    """A directory with a small BPE tokenizer.json holding `specials` and the JSON files
    `side_files` ({"tokenizer_config.json": {...}}) beside it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=290, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_texts(), trainer=trainer)
    d = tmp_path / name
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    for fname, content in side_files.items():
        (d / fname.replace("__", ".")).write_text(json.dumps(content))
    return d, tok


def one_line_error(match, fn, *args, **kw):
    with pytest.raises(UserError, match=match) as e:
        fn(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture(scope="module")
def bpe():
    return load_tokenizer("bpe:300", train_texts=train_texts)


def same_ids(a, b):
    for t in TEXTS:
        np.testing.assert_array_equal(a.encode(t), b.encode(t))
    for x, y in zip(a.encode_batch(TEXTS), b.encode_batch(TEXTS), strict=True):
        np.testing.assert_array_equal(x, y)


def test_byte_ids_unchanged():
    t = load_tokenizer("byte")
    assert isinstance(t, ByteTokenizer) and (t.kind, t.spec, t.identity) == ("byte",) * 3
    assert t.encode("é").tolist() == [195, 169] and t.encode("é").dtype == np.int32
    assert (t.eos_id, t.pad_id, t.bos_id, t.vocab_size) == (256, 257, None, 258)
    assert t.decode([104, 105, 256, 257]) == "hi"
    assert [x.tolist() for x in t.encode_batch(["a", "é"])] == [[97], [195, 169]]


def test_bpe_kind(bpe):
    assert (bpe.kind, bpe.spec, bpe.bos_id) == ("bpe", "bpe:300", None)
    assert bpe.vocab_size == bpe.tok.get_vocab_size(with_added_tokens=True) <= 300
    assert (bpe.eos_id, bpe.pad_id) == (bpe.tok.token_to_id("<|eos|>"),
                                        bpe.tok.token_to_id("<|pad|>"))
    for t in TEXTS:
        assert bpe.decode(bpe.encode(t)) == t
    one_line_error("no training texts", load_tokenizer, "bpe:300")
    one_line_error("only to a pretrained", load_tokenizer, "byte", eos="x")


def test_bpe_read_back_as_pretrained(bpe, tmp_path):
    bpe.save(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eos|>"}))
    for spec in (str(tmp_path), str(tmp_path / "tokenizer.json")):
        pre = load_tokenizer(spec)
        assert (pre.kind, pre.spec, pre.vocab_size) == ("pretrained", spec, bpe.vocab_size)
        assert (pre.eos_id, pre.bos_id, pre.pad_id) == (bpe.eos_id, None, -1)
        same_ids(pre, bpe)
    # an explicit EOS (token or id) overrides the files; a wrong one is an error
    assert load_tokenizer(str(tmp_path), eos="<|pad|>").eos_id == bpe.pad_id
    assert load_tokenizer(str(tmp_path), eos=5, bos=7).eos_id == 5
    one_line_error("'nope'.*not in the tokenizer's vocabulary", load_tokenizer, str(tmp_path),
                   eos="nope")
    one_line_error("--eos-id is id 100000, outside", load_tokenizer, str(tmp_path), eos=10**5)


def test_no_eos_is_an_error(tmp_path):
    d, _ = hf_dir(tmp_path, ["<unk>"])
    msg = one_line_error("has no EOS token", load_tokenizer, str(d))
    assert str(d) in msg and "--eos-token" in msg
    assert load_tokenizer(str(d), eos="<unk>").eos_id == 0


def test_gpt2_layout(tmp_path):
    d, tok = hf_dir(tmp_path, ["<|endoftext|>"])  # no side files: the known token
    t = load_tokenizer(str(d))
    assert (t.eos_id, t.bos_id) == (tok.token_to_id("<|endoftext|>"), None)
    # GPT-2's config names <|endoftext|> as BOS too: the EOS already separates documents
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}))
    assert load_tokenizer(str(d)).bos_id is None


def test_llama_layout(tmp_path):
    cfg = {"bos_token": {"content": "<s>", "special": True}, "eos_token": "</s>"}
    d, tok = hf_dir(tmp_path, ["<unk>", "<s>", "</s>"], tokenizer_config__json=cfg,
                    generation_config__json={"bos_token_id": 0, "eos_token_id": 0})
    t = load_tokenizer(str(d))  # tokenizer_config.json comes before generation_config.json
    assert (t.eos_id, t.bos_id) == (tok.token_to_id("</s>"), tok.token_to_id("<s>")) == (2, 1)
    assert t.encode("the fox").tolist() == tok.encode("the fox").ids  # no BOS added by encode


def test_generation_config_ids(tmp_path):
    d, _ = hf_dir(tmp_path, ["<unk>", "<s>", "</s>", "<|eot|>"],
                  special_tokens_map__json={"pad_token": "<unk>"},
                  generation_config__json={"eos_token_id": [3, 2]},
                  config__json={"bos_token_id": 1, "eos_token_id": 0})
    t = load_tokenizer(str(d / "tokenizer.json"))
    assert (t.eos_id, t.bos_id) == (3, 1)  # the list's first; BOS from config.json


def test_bad_side_files(tmp_path):
    d, _ = hf_dir(tmp_path, ["</s>"], tokenizer_config__json={"eos_token": "<|im_end|>"})
    msg = one_line_error("'<|im_end|>'", load_tokenizer, str(d))
    assert "tokenizer_config.json" in msg
    d, _ = hf_dir(tmp_path, ["</s>"], "t2", config__json={"eos_token_id": 10**6})
    one_line_error("eos_token_id in .*config.json is id 1000000, outside", load_tokenizer, str(d))
    (tmp_path / "bad.json").write_text("{not json")
    one_line_error("not a valid tokenizer.json", load_tokenizer, str(tmp_path / "bad.json"))


def test_parse_spec():
    assert parse_spec("byte") == ("byte", "")
    assert parse_spec("bpe") == ("bpe", "2048") and parse_spec("bpe", 512) == ("bpe", "512")
    assert parse_spec("bpe:4096") == ("bpe", "4096")
    for p in ("models/gpt2", "tok.json", "~/llama", "./qwen", "/abs/tokenizer.json"):
        assert parse_spec(p) == ("pretrained", p)
    for bad in ("gpt2", "", "BPE", "bytes"):
        assert f"'{bad}'" in one_line_error("is unknown; valid: byte, bpe", parse_spec, bad)
    for bad in ("bpe:abc", "bpe:100", "bpe:258", "bpe:", "bpe:-300"):
        assert f"'{bad}'" in one_line_error("integer > 258", parse_spec, bad)
    one_line_error("data.bpe_vocab_size 100", parse_spec, "bpe", 100)
    assert set(KINDS) == {"byte", "bpe", "pretrained"}


def test_missing_path(tmp_path):
    for p in (tmp_path / "nowhere", tmp_path):  # no such path; a directory without the file
        msg = one_line_error("not found: expected a tokenizer.json", load_tokenizer, str(p))
        assert str(p) in msg


def test_identity(bpe, tmp_path):
    other = load_tokenizer("bpe:300", train_texts=lambda: TEXTS[:2] * 20)
    assert bpe.identity.startswith(f"bpe:{bpe.vocab_size}:") and len(bpe.identity) == 8 + 16
    assert other.identity != bpe.identity
    for i, t in enumerate((bpe, other)):
        t.save(tmp_path / f"{i}.json")
        assert from_saved("bpe", t.spec, tmp_path / f"{i}.json", t.eos_id, None,
                          t.pad_id).identity == t.identity
    a, b = (load_tokenizer(str(tmp_path / "0.json"), eos=0) for _ in range(2))
    assert a.identity == b.identity != load_tokenizer(str(tmp_path / "1.json"), eos=0).identity
    assert a.identity.startswith("sha256:") and len(a.identity) == 7 + 16
    assert a.identity == pretrained_identity(tmp_path / "0.json")  # without building it
    compact = tmp_path / "compact.json"  # not as HF would write it
    compact.write_text(json.dumps(json.loads((tmp_path / "0.json").read_text())))
    c = load_tokenizer(str(compact), eos=0)
    (tmp_path / "d").mkdir()
    c.save(tmp_path / "d" / "tokenizer.json")  # verbatim: the identity survives a save
    assert pretrained_identity(tmp_path / "d") == c.identity == pretrained_identity(compact)
    one_line_error("not found", pretrained_identity, tmp_path / "nowhere")


def test_pickle_round_trip(bpe, tmp_path):
    bpe.save(tmp_path / "tokenizer.json")
    for t in (load_tokenizer("byte"), bpe, load_tokenizer(str(tmp_path), eos="<|eos|>")):
        u = pickle.loads(pickle.dumps(t))
        assert (u.kind, u.spec, u.identity, u.vocab_size, u.eos_id, u.bos_id, u.pad_id) == \
            (t.kind, t.spec, t.identity, t.vocab_size, t.eos_id, t.bos_id, t.pad_id)
        same_ids(u, t)


def test_from_saved(bpe, tmp_path):
    cfg = {"bos_token": "<s>", "eos_token": "</s>"}
    d, _ = hf_dir(tmp_path, ["<unk>", "<s>", "</s>"], tokenizer_config__json=cfg)
    for t in (load_tokenizer("byte"), bpe, load_tokenizer(str(d))):
        out = tmp_path / "saved" / t.kind
        out.mkdir(parents=True)
        t.save(out / "tokenizer.json")
        u = from_saved(t.kind, t.spec, out, t.eos_id, t.bos_id, t.pad_id)
        assert (u.kind, u.spec, u.identity, u.vocab_size, u.eos_id, u.bos_id, u.pad_id) == \
            (t.kind, t.spec, t.identity, t.vocab_size, t.eos_id, t.bos_id, t.pad_id)
        same_ids(u, t)
    one_line_error("kind 'sentencepiece' is unknown", from_saved, "sentencepiece", "x", d, 0,
                   None, 0)
