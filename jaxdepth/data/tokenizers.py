"""Tokenizers, one registry entry per kind (`KINDS`), named by a spec (`data.tokenizer`):

    byte              UTF-8 bytes 0..255, EOS = 256, PAD = 257 (vocabulary 258)
    bpe, bpe:<vocab>  a byte-level BPE (Sennrich et al. 2016, arXiv 1508.07909; GPT-2's
                      pre-tokenisation) trained on the corpus, specials <|eos|> and <|pad|>
    <path>            a pretrained tokenizer.json (GPT-2, LLaMA, Qwen, ...) or a directory
                      holding one; read from disk, never downloaded

Every tokenizer has `kind`, `spec`, `vocab_size`, `eos_id` (appended after every document),
`bos_id` (prepended before every document when not None), `pad_id`, `identity` (a string
that changes when the ids could), `encode`/`encode_batch` (no special tokens added),
`decode` and `save` (writes tokenizer.json; the byte tokenizer writes nothing). HF
tokenizers stay picklable through the wrapper, so they can be sent to worker processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from jaxdepth.errors import UserError

EOS = "<|eos|>"
PAD = "<|pad|>"
# End-of-document tokens of common pretrained tokenizers, tried in this order when no file
# beside tokenizer.json names the EOS: GPT-2 and Qwen, LLaMA 3, LLaMA 1/2 and T5, Gemma.
KNOWN_EOS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
# tokenizer.json's neighbours that name the specials, in the order they are read, with the
# key each holds the token under: a token string (or {"content": ...}), or an id (or list).
SIDE_FILES = (("tokenizer_config.json", "_token"), ("special_tokens_map.json", "_token"),
              ("generation_config.json", "_token_id"), ("config.json", "_token_id"))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, the alphabet byte-level BPE
    tokens are spelled in (openai/gpt-2, encoder.py `bytes_to_unicode`)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(extra)}}


def _sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class ByteTokenizer:
    """UTF-8 bytes 0..255, then EOS = 256 (document separator) and PAD = 257."""

    kind = spec = identity = "byte"
    vocab_size = 258
    eos_id = 256
    bos_id = None
    pad_id = 257

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of `text` as int32 ids."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        """`encode` of each text."""
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """The text of the byte ids (specials dropped, invalid UTF-8 replaced)."""
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def save(self, path: Path) -> None:
        """Nothing to save: the byte tokenizer is fixed."""


class HFTokenizer:
    """A HF `tokenizers.Tokenizer` (kind "bpe" or "pretrained") with the ids a corpus is
    packed with. A pretrained one keeps its tokenizer.json bytes: `save` writes them
    verbatim, so `identity` (their hash) survives a save and `from_saved`."""

    def __init__(self, tok, kind: str, spec: str, eos_id: int, bos_id: int | None,
                 pad_id: int, raw: bytes | None = None):
        self.tok, self.kind, self.spec, self.raw = tok, kind, spec, raw
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.eos_id, self.bos_id, self.pad_id = eos_id, bos_id, pad_id

    @cached_property
    def identity(self) -> str:
        """bpe: "bpe:<vocab>:<hash of the JSON>"; pretrained: "sha256:<hash of the file>"."""
        if self.raw is None:
            return f"bpe:{self.vocab_size}:{_sha16(self.tok.to_str().encode())}"
        return f"sha256:{_sha16(self.raw)}"

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text` as int32, without the tokenizer's own BOS/EOS."""
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        """`encode` of each text, batched (HF encodes in parallel threads)."""
        encs = self.tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def decode(self, ids) -> str:
        """The text of the ids (special tokens skipped)."""
        return self.tok.decode([int(i) for i in ids])

    def save(self, path: Path) -> None:
        """Write the tokenizer.json (a pretrained one's original bytes)."""
        if self.raw is None:
            self.tok.save(str(path))
        else:
            Path(path).write_bytes(self.raw)


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """A byte-level BPE (Sennrich et al. 2016) with `vocab_size` tokens trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return trained_bpe(tok, f"bpe:{vocab_size}")


def trained_bpe(tok, spec: str) -> HFTokenizer:
    return HFTokenizer(tok, "bpe", spec, tok.token_to_id(EOS), None, tok.token_to_id(PAD))


def _tokenizer_file(path) -> Path:
    p = Path(path).expanduser()
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"tokenizer '{path}' not found: expected a tokenizer.json file or a "
                        "directory holding one (pretrained tokenizers are read from disk only)")
    return f


def pretrained_identity(path) -> str:
    """"sha256:<16 hex>" of a tokenizer.json's bytes (or a directory's tokenizer.json):
    a pretrained tokenizer's `identity`, without building it."""
    return f"sha256:{_sha16(_tokenizer_file(path).read_bytes())}"


def _read_hf(path) -> tuple[Any, bytes, Path]:
    """(HF tokenizer, file bytes, file) of a tokenizer.json or a directory holding one."""
    from tokenizers import Tokenizer

    f = _tokenizer_file(path)
    raw = f.read_bytes()
    try:
        return Tokenizer.from_str(raw.decode("utf-8")), raw, f
    except Exception as e:  # noqa: BLE001 - HF raises a bare Exception on a bad file
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"tokenizer '{f}' is not a valid tokenizer.json ({why})") from None


def _token_id(tok, value, where: str) -> int:
    """The id of `value` (a token string or an integer id) in `tok`'s vocabulary."""
    n = tok.get_vocab_size(with_added_tokens=True)
    if isinstance(value, str):
        i = tok.token_to_id(value)
        if i is None:
            raise UserError(f"{where} names token {value!r}, which is not in the tokenizer's "
                            "vocabulary; name a token it has")
        return i
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where} is {value!r}; expected a token string or an integer id")
    if not 0 <= value < n:
        raise UserError(f"{where} is id {value}, outside the vocabulary [0, {n})")
    return value


def _named_id(tok, folder: Path, which: str) -> int | None:
    """The id of the `which` ("eos"/"bos") token named by the first file beside
    tokenizer.json that names one (SIDE_FILES order); None when none does."""
    for name, suffix in SIDE_FILES:
        f, key = folder / name, which + suffix
        if not f.is_file():
            continue
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            raise UserError(f"{f} is not a readable JSON object; fix it or pass "
                            f"--{which}-token TOKEN or --{which}-id ID") from None
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return _token_id(tok, value, f"{key} in {f}")
    return None


def _flag(which: str, value) -> str:
    return f"--{which}-token" if isinstance(value, str) else f"--{which}-id"


def _load_bpe(arg: str, *, train_texts=None, **_) -> HFTokenizer:
    if train_texts is None:
        raise UserError(f"data.tokenizer 'bpe:{arg}' is trained on the corpus, but no training "
                        "texts were given (train_texts: a callable returning the documents)")
    return train_bpe(train_texts() if callable(train_texts) else train_texts, int(arg))


def _load_pretrained(path: str, *, eos=None, bos=None, **_) -> HFTokenizer:
    tok, raw, f = _read_hf(path)
    eos_id = _token_id(tok, eos, _flag("eos", eos)) if eos is not None else \
        _named_id(tok, f.parent, "eos")
    if eos_id is None:  # no file names one: a known end-of-document special token
        specials = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        eos_id = next((specials[t] for t in KNOWN_EOS if t in specials), None)
    if eos_id is None:
        raise UserError(
            f"tokenizer '{path}' has no EOS token (none named in tokenizer_config.json, "
            "special_tokens_map.json, generation_config.json or config.json, and no "
            "<|endoftext|>, <|end_of_text|>, </s> or <eos> token); pass --eos-token TOKEN or "
            "--eos-id ID")
    # BOS from the files only (no guessing which token would be one).
    bos_id = _token_id(tok, bos, _flag("bos", bos)) if bos is not None else \
        _named_id(tok, f.parent, "bos")
    if bos_id == eos_id:
        # GPT-2's files name <|endoftext|> as both: the EOS already separates the documents,
        # so a BOS equal to it would only double the separator.
        bos_id = None
    # pad -1 matches no id: packed data never pads, and the loss masks nothing.
    return HFTokenizer(tok, "pretrained", path, eos_id, bos_id, -1, raw)


def _rebuild_hf(kind: str) -> Callable[..., HFTokenizer]:
    def rebuild(spec, path, eos_id, bos_id, pad_id) -> HFTokenizer:
        tok, raw, _ = _read_hf(path)
        return HFTokenizer(tok, kind, spec, eos_id, bos_id, pad_id,
                           raw if kind == "pretrained" else None)
    return rebuild


@dataclass(frozen=True)
class Kind:
    """One tokenizer kind. `load(arg, *, train_texts, eos, bos)` builds it from the argument
    `parse_spec` gives; `rebuild(spec, path, eos_id, bos_id, pad_id)` from a saved
    tokenizer.json with known ids."""

    load: Callable[..., Any]
    rebuild: Callable[..., Any]
    cite: str


KINDS: dict[str, Kind] = {
    "byte": Kind(lambda arg, **_: ByteTokenizer(), lambda *_: ByteTokenizer(), cite="UTF-8"),
    "bpe": Kind(_load_bpe, _rebuild_hf("bpe"),
                cite="Sennrich et al. 2016 (arXiv 1508.07909); byte-level as GPT-2"),
    "pretrained": Kind(_load_pretrained, _rebuild_hf("pretrained"),
                       cite="the tokenizer.json's own model (GPT-2, LLaMA, Qwen, ...)"),
}


def parse_spec(spec: str, bpe_vocab_size: int = 2048) -> tuple[str, str]:
    """(kind, argument) of a tokenizer spec, without touching the disk: "byte" -> ("byte",
    ""), "bpe" -> ("bpe", str(bpe_vocab_size)), "bpe:4096" -> ("bpe", "4096"), a path
    (holds '/', ends in '.json', starts with '~' or '.') -> ("pretrained", spec)."""
    if not isinstance(spec, str):
        spec = repr(spec)
    elif spec == "byte":
        return "byte", ""
    elif spec == "bpe" or spec.startswith("bpe:"):
        n = str(bpe_vocab_size) if spec == "bpe" else spec[4:]
        what = f"data.bpe_vocab_size {n}" if spec == "bpe" else f"data.tokenizer '{spec}'"
        if not (n.isascii() and n.isdigit() and int(n) > 258):
            raise UserError(f"{what}: the BPE vocabulary size must be an integer > 258 "
                            "(256 bytes + 2 specials + merges), e.g. bpe:2048")
        return "bpe", str(int(n))
    elif "/" in spec or spec.endswith(".json") or spec.startswith(("~", ".")):
        return "pretrained", spec
    raise UserError(f"data.tokenizer '{spec}' is unknown; valid: byte, bpe, bpe:<vocab size>, "
                    "or a path to a tokenizer.json / tokenizer directory")


def load_tokenizer(spec: str, *, bpe_vocab_size: int = 2048, train_texts=None, eos=None,
                   bos=None):
    """The tokenizer a spec names (see `parse_spec`). bpe trains on `train_texts` (a
    zero-argument callable returning an iterable of documents). pretrained reads a
    tokenizer.json (or a directory holding one) and resolves EOS/BOS from the files beside
    it; `eos`/`bos` (a token string or an integer id) override them."""
    kind, arg = parse_spec(spec, bpe_vocab_size)
    if kind != "pretrained" and (eos is not None or bos is not None):
        raise UserError(f"an explicit EOS/BOS applies only to a pretrained tokenizer, not to "
                        f"data.tokenizer '{spec}' (its specials are fixed); drop the override")
    return KINDS[kind].load(arg, train_texts=train_texts, eos=eos, bos=bos)


def from_saved(kind: str, spec: str, path, eos_id: int, bos_id: int | None, pad_id: int):
    """A tokenizer rebuilt from its saved tokenizer.json (or a directory holding one) with
    known ids, as a prepared corpus's manifest records them; byte ignores `path`."""
    if kind not in KINDS:
        raise UserError(f"tokenizer kind '{kind}' is unknown; valid: {', '.join(KINDS)}")
    return KINDS[kind].rebuild(spec, path, eos_id, bos_id, pad_id)
