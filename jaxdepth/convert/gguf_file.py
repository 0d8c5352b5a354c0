"""A GGUF file read as if it were a Hugging Face checkpoint directory.

GGUF is llama.cpp's one-file format (spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
typed key-value metadata (`general.architecture`, `llama.block_count`, `tokenizer.ggml.tokens`, ...)
then tensors in ggml types (F32, F16, Q8_0, Q4_K, ...) under llama.cpp's names (`token_embd.weight`,
`blk.N.attn_q.weight`, ...). For the `llama` (also Mistral, SmolLM) and `qwen2` architectures,
`GGUFCheckpoint` gives what a HF model directory holds, as transformers reads the file:
  - `config`: a `config.json` dict from the `{arch}.*` hyperparameters;
  - `names()` / `shape(name)` / `tensor(name)`: HF tensor names, and float32 arrays in HF layout
    dequantised one tensor at a time from the memory-mapped file, with llama.cpp's rotary row
    permutation of llama's q/k projections undone;
  - `tokenizer_files()`: `tokenizer.json` and `tokenizer_config.json` for a byte-level BPE
    vocabulary (`tokenizer.ggml.model` "gpt2"), built with the `tokenizers` library.
Everything is checked when the file is opened, before any tensor is dequantised.
"""

from __future__ import annotations

import json

import gguf
import numpy as np

from jaxdepth.data.tokenizers import bytes_to_unicode
from jaxdepth.errors import UserError

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
SUPPORTED_TYPES = {getattr(gguf.GGMLQuantizationType, t) for t in (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K")}
# llama.cpp's per-layer tensor name -> the HF module it came from
LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
         "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj"}
# transformers' choice of split regex per `tokenizer.ggml.pre` (integrations/gguf); others: GPT-2's
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
          r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {**dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                           "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3),
          **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2),
          **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O),
          "tekken": _TEKKEN}
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


class GGUFCheckpoint:
    """A `llama` or `qwen2` GGUF file presented as a HF config, tensors and tokenizer files."""

    def __init__(self, path):
        self.path = str(path)
        try:
            self._reader = gguf.GGUFReader(self.path)
        except FileNotFoundError:
            raise UserError(f"GGUF file {self.path} does not exist; give the path to a .gguf "
                            "model file") from None
        except (OSError, ValueError, LookupError) as e:  # bad magic, truncated, a directory
            raise UserError(f"{self.path} is not a readable GGUF file ({e}); expected a .gguf "
                            "file written by llama.cpp's converter") from None
        self.arch = arch = self._field("general.architecture")
        if arch not in ARCHITECTURES:
            raise UserError(f"{self.path}: GGUF architecture {arch!r} is not supported; supported "
                            f"are {sorted(ARCHITECTURES)} (Mistral and SmolLM files are stored as "
                            "'llama')")
        stored = {t.name: t for t in self._reader.tensors}
        for t in stored.values():
            if t.tensor_type not in SUPPORTED_TYPES:
                raise UserError(f"{self.path}: tensor {t.name} is stored as {t.tensor_type.name}, "
                                "which cannot be dequantised; supported types are "
                                f"{', '.join(sorted(q.name for q in SUPPORTED_TYPES))}")
        width, layers = self._field(f"{arch}.embedding_length"), self._field(f"{arch}.block_count")
        heads = self._field(f"{arch}.attention.head_count")
        kv_heads = self._field(f"{arch}.attention.head_count_kv", heads)
        head_dim = self._field(f"{arch}.attention.key_length", width // heads)
        ffn = self._field(f"{arch}.feed_forward_length")
        vocab = self._field(f"{arch}.vocab_size", None)
        if vocab is None:  # as transformers: the vocabulary's length when the key is absent
            vocab = len(self._field("tokenizer.ggml.tokens", ()))
        self.config = {
            "architectures": [ARCHITECTURES[arch]], "model_type": arch, "hidden_size": width,
            "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": head_dim,
            "rms_norm_eps": self._field(f"{arch}.attention.layer_norm_rms_epsilon"),
            "rope_theta": self._field(f"{arch}.rope.freq_base", 10000.0), "vocab_size": vocab,
            "max_position_embeddings": self._field(f"{arch}.context_length"),
            "tie_word_embeddings": "output.weight" not in stored,
            "bos_token_id": self._field("tokenizer.ggml.bos_token_id", None),
            "eos_token_id": self._field("tokenizer.ggml.eos_token_id", None),
            "hidden_act": "silu", "attention_bias": arch == "qwen2"}
        scaling = self._field(f"{arch}.rope.scaling.type", "none")
        if scaling != "none" or "rope_freqs.weight" in stored:
            raise UserError(f"{self.path}: rotary scaling ({scaling}, or a rope_freqs tensor) is "
                            "not supported; only plain RoPE GGUF files can be imported")
        # HF name -> (GGUF name, HF shape)
        q, kv = (heads * head_dim, width), (kv_heads * head_dim, width)
        per_layer = {"attn_norm": (width,), "ffn_norm": (width,), "attn_q": q, "attn_k": kv,
                     "attn_v": kv, "attn_output": (width, heads * head_dim),
                     "ffn_gate": (ffn, width), "ffn_up": (ffn, width), "ffn_down": (width, ffn)}
        self._map = {"model.embed_tokens.weight": ("token_embd.weight", (vocab, width))}
        for i in range(layers):
            for g, shape in per_layer.items():
                self._map[f"model.layers.{i}.{LAYER[g]}.weight"] = (f"blk.{i}.{g}.weight", shape)
            for g in ("attn_q", "attn_k", "attn_v") if arch == "qwen2" else ():
                self._map[f"model.layers.{i}.{LAYER[g]}.bias"] = (f"blk.{i}.{g}.bias",
                                                                  per_layer[g][:1])
        self._map["model.norm.weight"] = ("output_norm.weight", (width,))
        if not self.config["tie_word_embeddings"]:
            self._map["lm_head.weight"] = ("output.weight", (vocab, width))
        for hf, (g, shape) in self._map.items():
            if g not in stored:
                raise UserError(f"{self.path}: tensor {g} (for {hf}) is missing; a {arch} GGUF "
                                f"with {layers} layers has it")
            if tuple(int(n) for n in reversed(stored[g].shape)) != shape:
                raise UserError(f"{self.path}: tensor {g} has shape "
                                f"{tuple(reversed(stored[g].shape.tolist()))}, expected {shape} "
                                "from the file's hyperparameters")
        unused = sorted(set(stored) - {g for g, _ in self._map.values()})
        if unused:
            raise UserError(f"{self.path}: tensor {unused[0]} has no place in a {arch} model "
                            f"({len(unused)} such tensors); the file is not a plain {arch} GGUF")
        self._stored = stored

    def _field(self, key, default=KeyError):
        field = self._reader.fields.get(key)
        if field is None:
            if default is KeyError:
                raise UserError(f"{self.path}: GGUF metadata key {key} is missing; llama.cpp's "
                                "converter writes it for every model")
            return default
        return field.contents()

    def names(self) -> list[str]:
        """The HF tensor names this checkpoint has, in HF order."""
        return list(self._map)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._map[name][1]

    @property
    def dtype(self) -> str:
        """"bfloat16" when most tensors are stored as BF16, else float32 (what dequantising gives)."""
        kinds = [self._stored[g].tensor_type.name for g, _ in self._map.values()]
        return "bfloat16" if kinds.count("BF16") * 2 > len(kinds) else "float32"

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as a fresh float32 array in HF layout (nn.Linear weights are (out, in))."""
        if name not in self._map:
            raise KeyError(f"{name} is not a tensor of {self.path}; see names()")
        g, shape = self._map[name]
        t = self._stored[g]
        w = np.empty(shape, np.float32)  # filled a few MB at a time: blocks never span rows
        step = (1 << 22) // shape[1] + 1 if len(shape) == 2 else len(w)
        for i in range(0, len(w), step):
            w[i:i + step] = gguf.quants.dequantize(t.data[i:i + step], t.tensor_type)
        if self.arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            # llama.cpp interleaves each head's rotary halves (convert_hf_to_gguf.py `permute`);
            # undo it as transformers' `LlamaTensorProcessor._reverse_permute_weights` does
            n = self.config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
            w = w.reshape(n, shape[0] // n // 2, 2, shape[1]).swapaxes(2, 1).reshape(shape)
        return w

    def tokenizer_files(self) -> dict[str, bytes]:
        """`tokenizer.json` and `tokenizer_config.json` for the file's byte-level BPE vocabulary."""
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
        from tokenizers.models import BPE

        if (kind := self._field("tokenizer.ggml.model", None)) != "gpt2":
            raise UserError(f"{self.path}: vocabulary type {kind!r} (tokenizer.ggml.model) is not "
                            "supported; only byte-level BPE ('gpt2') vocabularies can be imported")
        tokens = self._field("tokenizer.ggml.tokens")
        types = self._field("tokenizer.ggml.token_type", [])
        spelling = bytes_to_unicode()
        alphabet = set(spelling.values())  # byte-level tokens are spelled in it; respell others
        vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode()): i
                 for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ")) for m in self._field("tokenizer.ggml.merges")]
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
        split = SPLITS.get(self._field("tokenizer.ggml.pre", None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else \
            pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                              use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        # control tokens as special added tokens (as transformers: only those spelled in the byte
        # alphabet, others are llama.cpp mislabels), user-defined ones as plain added tokens
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, k in zip(tokens, types) if k == CONTROL and set(t) <= alphabet])
        tok.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab])
        add_bos = bool(self._field("tokenizer.ggml.add_bos_token", False))
        config = {"add_bos_token": add_bos}
        for role in ("bos", "eos") if add_bos else ("eos",):
            if (index := self._field(f"tokenizer.ggml.{role}_token_id", None)) is not None:
                config[f"{role}_token"] = tokens[index]
        if (template := self._field("tokenizer.chat_template", None)) is not None:
            config["chat_template"] = template
        return {"tokenizer.json": tok.to_str().encode(),
                "tokenizer_config.json": json.dumps(config, indent=2).encode()}

