"""A local Hugging Face model directory read tensor by tensor: `config.json`, safetensors
weights (`model.safetensors`, or shards listed by `model.safetensors.index.json`) and the
tokenizer files. Every check (config, shards present and agreeing with the index, a
tokenizer) happens when the directory is opened, from the files' headers, before any weight
is read; `tensor(name)` then reads one tensor from its memory-mapped shard.

The same interface is offered by `gguf_file.GGUFCheckpoint`: `config`, `names()`,
`shape(name)`, `dtype`, `tensor(name)`, `tokenizer_files()`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxdepth.errors import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# tokenizer files carried into a run directory (config.json is the run's own: not copied)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")


def _read_json(p: Path, what: str) -> dict:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{what} '{p}' is not readable JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} '{p}' must hold a JSON object")
    return data


class HFDirectory:
    def __init__(self, path):
        from safetensors import safe_open

        d = Path(path).expanduser()
        self.path = d
        if not (d / "config.json").is_file():
            raise UserError(f"'{path}' is not a Hugging Face model directory (no config.json); "
                            "give a directory with config.json and *.safetensors, or a .gguf file")
        self.config = _read_json(d / "config.json", "model config")
        if (d / INDEX).is_file():
            weight_map = _read_json(d / INDEX, "safetensors index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{d / INDEX} has no weight_map of tensor -> shard file")
        elif (d / SINGLE).is_file():
            weight_map = None
        else:
            other = sorted(p.name for p in d.glob("*.bin")) + sorted(p.name for p in d.glob("*.pt"))
            hint = (f" (found {', '.join(other[:3])}: PyTorch pickles are not read; save with "
                    "safe_serialization=True)") if other else ""
            raise UserError(f"'{d}' has no {SINGLE} or {INDEX}{hint}")
        shards = sorted(set(weight_map.values())) if weight_map else [SINGLE]
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise UserError(f"'{d}' is missing {len(missing)} of its {len(shards)} weight shards "
                            f"listed in {INDEX}, e.g. {missing[0]}")
        self._where, self._shape, self._dtype = {}, {}, {}
        for s in shards:
            try:
                with safe_open(str(d / s), framework="numpy") as f:
                    for k in f.keys():
                        sl = f.get_slice(k)
                        self._where[k], self._shape[k] = s, tuple(sl.get_shape())
                        self._dtype[k] = sl.get_dtype()
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
                raise UserError(f"weight shard '{d / s}' is not a readable safetensors file "
                                f"({type(e).__name__}: {str(e)[:120]})") from None
        if weight_map:
            wrong = [k for k, s in weight_map.items() if self._where.get(k) != s]
            if wrong:
                k = wrong[0]
                raise UserError(f"{INDEX} in '{d}' does not match its shards: tensor '{k}' is "
                                f"listed in {weight_map[k]} but found in "
                                f"{self._where.get(k, 'no shard')} ({len(wrong)} such tensors)")
        if not (d / "tokenizer.json").is_file():
            raise UserError(f"'{d}' has no tokenizer.json: a model imports with its tokenizer "
                            "(save it beside the weights, e.g. tokenizer.save_pretrained(dir))")
        self._open = {}

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shape[name]

    @property
    def dtype(self) -> str:
        """The weights' storage type: "bfloat16" when most of them are BF16, else float32."""
        kinds = list(self._dtype.values())
        return "bfloat16" if kinds.count("BF16") * 2 > len(kinds) else "float32"

    def tensor(self, name: str) -> np.ndarray:
        """One tensor, read from its memory-mapped shard (a fresh array)."""
        from safetensors import safe_open

        shard = self._where[name]
        if shard not in self._open:
            self._open = {shard: safe_open(str(self.path / shard), framework="numpy")}
        return self._open[shard].get_tensor(name)

    def tokenizer_files(self) -> dict[str, bytes]:
        return {n: (self.path / n).read_bytes() for n in TOKENIZER_FILES
                if (self.path / n).is_file()}
