"""Typed, frozen run configuration: YAML in, dotted `key.sub=value` overrides, validated once.

Every section is a frozen dataclass; `load_config(path, overrides)` is the only entry point
the command line uses. Validation errors are `UserError`s that name the bad key and list
the valid ones, raised before anything compiles or trains.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from jaxdepth.errors import UserError

# The valid values of each categorical field, listed once: validation reads them here and the
# model resolves them by name (jnp.dtype(name), jax.checkpoint_policies.<name>).
NORMS = ("rmsnorm", "layernorm")
FFNS = ("swiglu", "gelu")
# token positions: rotary (Su et al. 2021) or a learned table (GPT-2, Radford et al. 2019)
POSITIONS = ("rope", "learned")
# remat: auto = dots_saveable on CPU (faster and smaller there than none: `jaxdepth bench`),
# none on GPU/TPU (jaxdepth.model.precision)
REMAT_POLICIES = ("auto", "none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
# compute dtype: auto = bfloat16 on GPU/TPU, float32 on CPU (jaxdepth.model.precision).
# No float16: it needs loss scaling, and bfloat16 has float32's range.
DTYPES = ("auto", "float32", "bfloat16")
PARAM_DTYPES = ("float32", "bfloat16")
# attention kernel: auto = cuDNN fused on NVIDIA GPUs in bfloat16, Pallas splash on TPU,
# XLA elsewhere (jaxdepth.model.precision)
ATTENTIONS = ("auto", "xla", "cudnn", "splash")
# hyperparameter transfer across width and depth (jaxdepth.model.parameterization)
PARAMETERIZATIONS = ("sp", "mup", "completep")
# which targets the loss counts: every next token, or a synthetic task's answers alone
LOSS_ON = ("all", "answers")
# LayerSkip's early-exit curriculum (arXiv 2404.16710 §4.2): every exit from the start, or
# enabled one layer at a time from the last to the first over the first half of training
EXIT_CURRICULA = ("none", "gradual")
CHOICES = {"train.early_exit_curriculum": EXIT_CURRICULA, "data.loss_on": LOSS_ON, "model.parameterization": PARAMETERIZATIONS, "model.norm": NORMS, "model.ffn": FFNS,
           "model.positions": POSITIONS,
           "model.remat": REMAT_POLICIES,
           "model.dtype": DTYPES, "model.param_dtype": PARAM_DTYPES,
           "model.attention": ATTENTIONS}


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 4
    width: int = 128
    heads: int = 4
    kv_heads: int = 0  # key/value heads (grouped-query attention); 0: as many as heads
    vocab_size: int = 0  # 0: taken from the tokenizer (rounded up to a multiple of 64)
    scheme: str = "pre"  # residual/normalisation scheme, see jaxdepth.model.schemes
    norm: str = "rmsnorm"  # one of NORMS
    norm_eps: float = 1e-6
    ffn: str = "swiglu"  # one of FFNS (gelu: its tanh approximation, GPT-2's gelu_new)
    ffn_hidden: int = 0  # 0: 8/3 W rounded up to a multiple of 64 (swiglu) or 4 W (gelu)
    tied_embeddings: bool = True
    init_std: float = 0.02
    scaled_init: bool = False  # output projections get std / sqrt(2 * depth)
    rope_theta: float = 10000.0
    positions: str = "rope"  # one of POSITIONS
    max_positions: int = 0  # rows of the learned position table (positions=learned)
    qkv_bias: bool = False  # biases on the q, k, v projections (Qwen2, GPT-2)
    proj_bias: bool = False  # biases on the attention output and FFN projections (GPT-2)
    remat: str = "auto"  # one of REMAT_POLICIES: auto, none, full, or a jax.checkpoint_policies name
    scan_layers: bool = True
    dtype: str = "auto"  # compute dtype, one of DTYPES; norms, softmax, logits stay float32
    param_dtype: str = "float32"  # storage dtype of parameters (and Adam moments)
    attention: str = "auto"  # one of ATTENTIONS
    mix_fraction: float = 0.25  # Mix-LN: fraction of early layers that are Post-LN
    layerscale_init: float = 1e-4  # LayerScale/SkipInit gate init
    # one of PARAMETERIZATIONS: sp (standard), mup (width), completep (width and depth); the
    # keys below only act under mup/completep (jaxdepth.model.parameterization)
    parameterization: str = "sp"
    base_width: int = 64  # the width the base hyperparameters were tuned at (m_W = 1)
    base_depth: int = 4  # the depth they were tuned at (m_L = 1)
    depth_alpha: float = 1.0  # residual branch m_L^-alpha: 1 CompleteP, 0.5 depth-muP
    input_mult: float = 1.0  # muP input multiplier on the embedding output
    output_mult: float = 1.0  # muP output multiplier: logits * output_mult / m_W
    # Connections beyond the residual stream (docs/literature.md §10), on any scheme.
    # DenseFormer (arXiv 2402.02622): after block i the stream is a learned depth-weighted
    # average of the embedding and the block outputs so far (jaxdepth.model.dwa); dilation k
    # averages only outputs a multiple of k blocks back, period p puts a DWA after every p-th
    # block (DenseFormer kxp).
    dwa: bool = False
    dwa_dilation: int = 1
    dwa_period: int = 1
    # Mixture-of-Depths (arXiv 2404.02258): in every mod_every-th layer a router sends the top
    # mod_capacity fraction of each sequence's tokens through the block, the rest skip it
    # (jaxdepth.model.mod); 1.0: no routing. mod_aux_weight: the auxiliary router loss that
    # makes routing causal at sampling time.
    mod_capacity: float = 1.0
    mod_every: int = 2
    mod_aux_weight: float = 0.01

    @property
    def ffn_hidden_size(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.ffn == "gelu":
            return 4 * self.width
        return -(-int(8 * self.width / 3) // 64) * 64

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def kv_head_count(self) -> int:
        return self.kv_heads or self.heads


@dataclass(frozen=True)
class DataConfig:
    # a directory made by `jaxdepth prepare`, or a raw source prepared into cache_dir on first
    # use: stdlib (the embedded corpus), pydoc (embedded English prose), a text file, a
    # directory, .jsonl(.gz/.zst), .parquet
    source: str = "stdlib"
    text_field: str = "text"  # JSONL / Parquet / datasets field holding the document text
    tokenizer: str = "byte"  # byte | bpe | bpe:<vocab> | path to a tokenizer.json or its dir
    bpe_vocab_size: int = 2048  # for tokenizer "bpe"
    seq_len: int = 128
    batch_size: int = 16  # global batch, in sequences
    val_fraction: float = 0.05  # fraction of documents (files) held out for validation
    seed: int = 0
    cache_dir: str = ""  # "": ~/.cache/jaxdepth
    # a synthetic capability task instead of a corpus (jaxdepth.data.tasks: khop, var_chain,
    # state_tracking, facts), generated on the fly in sequences of seq_len positions; "": the
    # corpus in `source`
    task: str = ""
    difficulty: int = 0  # the task's difficulty (k hops, chain length, word length, hops); 0: its default
    task_options: str = ""  # the task's options, "name=value,..." (e.g. "alphabet=4")
    loss_on: str = "all"  # one of LOSS_ON; answers: only a task's answer targets are trained on


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    lr: float = 3e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decays to min_lr_ratio * lr
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 0
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 4
    ckpt_every: int = 100
    keep_checkpoints: int = 3
    diverge_loss: float = 0.0  # stop as diverged above this loss; 0: 3 * ln(vocab)
    layer_lr_decay: float = 1.0  # layer l gets lr * decay^(depth-1-l); 1 = uniform
    train_last_layers: int = 0  # >0: freeze embeddings and all but the last k layers
    init_from: str = ""  # a run dir: its latest checkpoint's params initialise this run
    microbatches: int = 1  # gradient accumulation: the global batch in k sequential slices
    layer_stats: bool = True  # per-layer residual RMS, update ratios, grad norms in metrics
    # a task run ends (done) at the first evaluation whose exact-match accuracy reaches this
    # (the step is recorded as `solved_step`); 0: train every step
    stop_at_accuracy: float = 0.0
    # LayerSkip (arXiv 2404.16710): early-exit losses of every layer through the shared
    # unembedding, e(l) = early_exit_scale * sum_{i<=l} i, the last layer's loss weighted
    # L - 1 + that (normalised to sum 1; 0: the last layer's loss alone), with a curriculum;
    # and layer dropout per example rising with depth, p_l = layer_dropout * (2^(l/(L-1)) - 1)
    early_exit_scale: float = 0.0
    early_exit_curriculum: str = "none"  # one of EXIT_CURRICULA
    layer_dropout: float = 0.0


@dataclass(frozen=True)
class ParallelConfig:
    data: int = -1  # mesh axis sizes; one may be -1 (fills the remaining devices)
    fsdp: int = 1
    tensor: int = 1
    # logical axis -> mesh axes (None: replicated); users change these in YAML, not code
    rules: tuple[tuple[str, Any], ...] = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv", None),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
        ("layers", None),
    )


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


# ---------------------------------------------------------------- dict <-> dataclass


def to_dict(cfg) -> dict:
    """Plain nested dict (JSON/YAML-safe) of a config dataclass."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):  # lists at every level, as JSON reads them back
            v = json.loads(json.dumps(v))
        out[f.name] = v
    return out


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the field's type, or raise a UserError naming the key."""
    if typ in (int, float, bool) and isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return str(value)
    # rules: list of [logical, mesh] pairs, or a mapping
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if isinstance(value, dict):
        value = list(value.items())
    try:
        return tuple(
            (str(k), tuple(v) if isinstance(v, list) else v) for k, v in value
        )
    except (TypeError, ValueError):
        raise UserError(f"{key}: expected a list of [logical_axis, mesh_axes] pairs") from None


def from_dict(cls, data: dict | None, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, rejecting unknown keys by name."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UserError(
                f"unknown config key '{full}'{hint}; valid keys"
                f"{' under ' + prefix[:-1] if prefix else ''}: {', '.join(names)}"
            )
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"{full}: expected a section of keys, got {value!r}")
            kwargs[key] = from_dict(typ, value, prefix=f"{full}.")
        else:
            kwargs[key] = _coerce(value, typ, full)
    return cls(**kwargs)


def get_dotted(data: dict, key: str, default=None):
    """`get_dotted(d, "model.depth")`: a value of a nested dict by its dotted key."""
    for p in key.split("."):
        if not isinstance(data, dict) or p not in data:
            return default
        data = data[p]
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` strings to a nested dict (values parsed as YAML scalars)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = value
    return data


# ---------------------------------------------------------------- validation


def validate(cfg: RunConfig) -> RunConfig:
    """Check values that types alone cannot; each failure is one line naming the key."""
    from jaxdepth.data.tokenizers import parse_spec  # registry lives with the data
    from jaxdepth.model.schemes import SCHEMES  # registry lives with the model

    m, d, t = cfg.model, cfg.data, cfg.train
    checks = [
        (m.depth >= 1, f"model.depth must be >= 1, got {m.depth}"),
        (m.width >= 1, f"model.width must be >= 1, got {m.width}"),
        (m.heads >= 1, f"model.heads must be >= 1, got {m.heads}"),
        (
            m.width % max(m.heads, 1) == 0,
            f"model.width ({m.width}) must be divisible by model.heads ({m.heads}); "
            f"valid head counts: {[h for h in range(1, m.width + 1) if m.width % h == 0][:12]}",
        ),
        (
            m.heads < 1 or (m.width // m.heads) % 2 == 0,
            f"model.width / model.heads = {m.width // max(m.heads, 1)} must be even "
            "(RoPE rotates pairs of channels)",
        ),
        (m.kv_heads >= 0 and m.heads % max(m.kv_heads, 1) == 0,
         f"model.kv_heads ({m.kv_heads}) must divide model.heads ({m.heads}) (grouped-query "
         "attention shares each key/value head among heads / kv_heads query heads); 0: heads"),
        (m.positions != "learned" or m.max_positions >= d.seq_len,
         f"model.max_positions ({m.max_positions}) must be >= data.seq_len ({d.seq_len}) with "
         "model.positions=learned (one learned row per position)"),
        (m.scheme in SCHEMES,
         f"model.scheme '{m.scheme}' is unknown; valid schemes: {', '.join(sorted(SCHEMES))}"),
        (m.base_width >= 1, f"model.base_width must be >= 1, got {m.base_width}"),
        (m.base_depth >= 1, f"model.base_depth must be >= 1, got {m.base_depth}"),
        (0.5 <= m.depth_alpha <= 1.0, "model.depth_alpha must be in [0.5, 1] (0.5 depth-muP, "
         f"1 CompleteP), got {m.depth_alpha}"),
        (m.input_mult > 0 and m.output_mult > 0, "model.input_mult and model.output_mult must "
         f"be > 0, got {m.input_mult} and {m.output_mult}"),
        (0.0 <= m.mix_fraction <= 1.0, f"model.mix_fraction must be in [0, 1], got {m.mix_fraction}"),
        (d.seq_len >= 2, f"data.seq_len must be >= 2, got {d.seq_len}"),
        (d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}"),
        (0.0 < d.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {d.val_fraction}"),
        (t.steps >= 1, f"train.steps must be >= 1, got {t.steps}"),
        (t.lr > 0, f"train.lr must be > 0, got {t.lr}"),
        (0 <= t.warmup_steps <= t.steps,
         f"train.warmup_steps must be in [0, train.steps={t.steps}], got {t.warmup_steps}"),
        (t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}"),
        (t.eval_every >= 0, f"train.eval_every must be >= 0 (0 disables), got {t.eval_every}"),
        (t.ckpt_every >= 1, f"train.ckpt_every must be >= 1, got {t.ckpt_every}"),
        (t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}"),
        (t.layer_lr_decay > 0, f"train.layer_lr_decay must be > 0, got {t.layer_lr_decay}"),
        (0 <= t.train_last_layers <= m.depth,
         f"train.train_last_layers must be in [0, model.depth={m.depth}], got {t.train_last_layers}"),
    ]
    checks += [
        (t.microbatches >= 1, f"train.microbatches must be >= 1, got {t.microbatches}"),
        (m.dwa_dilation >= 1 and m.dwa_period >= 1, "model.dwa_dilation and model.dwa_period "
         f"must be >= 1, got {m.dwa_dilation} and {m.dwa_period}"),
        (0.0 < m.mod_capacity <= 1.0,
         f"model.mod_capacity must be in (0, 1] (1: no routing), got {m.mod_capacity}"),
        (m.mod_every >= 1, f"model.mod_every must be >= 1, got {m.mod_every}"),
        (m.mod_capacity == 1.0 or int(m.mod_capacity * d.seq_len) >= 1,
         f"model.mod_capacity ({m.mod_capacity}) x data.seq_len ({d.seq_len}) routes no token; "
         f"use a capacity >= {1 / d.seq_len:.3g}"),
        (m.mod_aux_weight >= 0, f"model.mod_aux_weight must be >= 0, got {m.mod_aux_weight}"),
        (t.early_exit_scale >= 0, f"train.early_exit_scale must be >= 0, got {t.early_exit_scale}"),
        (0.0 <= t.layer_dropout < 1.0,
         f"train.layer_dropout must be in [0, 1), got {t.layer_dropout}"),
        (d.batch_size % max(t.microbatches, 1) == 0,
         f"data.batch_size ({d.batch_size}) must be divisible by train.microbatches "
         f"({t.microbatches})"),
        (m.dtype != "float16", "model.dtype 'float16' is not supported (it needs loss scaling); "
         "use bfloat16, which has float32's range, or auto"),
    ]
    values = to_dict(cfg)
    checks += [(get_dotted(values, key) in valid,
                f"{key} '{get_dotted(values, key)}' is unknown; valid: {', '.join(valid)}")
               for key, valid in CHOICES.items()]
    checks += [
        (d.loss_on != "answers" or d.task, "data.loss_on=answers needs a synthetic task "
         "(data.task=khop|var_chain|state_tracking|facts): a corpus has no answers marked"),
        (0.0 <= t.stop_at_accuracy <= 1.0,
         f"train.stop_at_accuracy must be in [0, 1] (0 disables), got {t.stop_at_accuracy}"),
        (t.stop_at_accuracy == 0.0 or d.task, "train.stop_at_accuracy needs a synthetic task "
         "(data.task): a corpus has no exact-match accuracy"),
        (d.difficulty >= 0, f"data.difficulty must be >= 0 (0: the task's default), got "
         f"{d.difficulty}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    parse_spec(d.tokenizer, d.bpe_vocab_size)  # a UserError naming the valid kinds
    if d.task:  # the task's own checks: name, difficulty, options, length
        from jaxdepth.data.tasks import task_of

        task_of(d)
    return cfg


def check_paths(cfg: RunConfig) -> RunConfig:
    """The checks that read the disk, made where a config is loaded (not in `validate`,
    which every `replace` runs): the data source and `train.init_from` exist."""
    t, d = cfg.train, cfg.data
    from jaxdepth.rundir import has_checkpoint

    if t.init_from and not has_checkpoint(t.init_from):
        raise UserError(f"train.init_from '{t.init_from}' is not a run dir with a checkpoint "
                        f"(expected {t.init_from}/checkpoints/<step>)")
    from jaxdepth.data.sources import EMBEDDED

    if not d.task and d.source not in EMBEDDED and not Path(d.source).expanduser().exists():
        raise UserError(
            f"data.source '{d.source}' does not exist; give 'stdlib' or 'pydoc' (embedded), a "
            "directory made by `jaxdepth prepare`, a text file, a directory of text files, or a "
            ".jsonl / .parquet file")
    from jaxdepth.data.tokenizers import parse_spec

    kind, arg = parse_spec(d.tokenizer, d.bpe_vocab_size)
    if kind == "pretrained" and not Path(arg).expanduser().exists():
        raise UserError(f"data.tokenizer '{d.tokenizer}' does not exist; give a tokenizer.json "
                        "or a directory holding one, or byte / bpe / bpe:<vocab>")
    return cfg


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file that must hold a mapping; each failure is a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} '{path}' not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{what} '{path}' is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UserError(f"{what} '{path}' must hold a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """YAML file (optional) + overrides -> validated, frozen RunConfig whose paths exist."""
    data = {} if path is None else read_yaml_mapping(path)
    _not_a_sweep_spec(data, path)
    data = apply_overrides(data, list(overrides))
    return check_paths(validate(from_dict(RunConfig, data)))


def _not_a_sweep_spec(data: dict, path) -> None:
    from jaxdepth.sweep.spec import SPEC_KEYS  # sweep/spec.py imports this module

    foreign = set(data) - {f.name for f in dataclasses.fields(RunConfig)}
    if foreign and foreign <= set(SPEC_KEYS):
        raise UserError(f"'{path}' is a sweep spec (it has {', '.join(sorted(foreign))}), not a "
                        f"run config; run it with `jaxdepth sweep {path}`")


def replace(cfg: RunConfig, **sections) -> RunConfig:
    """`replace(cfg, model=dict(depth=8))`: a new validated config with fields changed."""
    data = to_dict(cfg)
    for sec, changes in sections.items():
        if isinstance(changes, dict):
            data[sec].update(changes)
        else:
            data[sec] = changes
    return validate(from_dict(RunConfig, data))
