"""Sweep specs: a base run config, grid axes, zipped axes and shape helpers -> RunConfigs.

A spec is YAML (or the same mapping in Python):

```yaml
name: sweep_tiny                 # optional; default: the file's stem
base: tiny.yaml                  # a run config path (relative to this file, else to the cwd)
                                 # or an inline mapping of sections
overrides: {train.steps: 20}     # optional: dotted keys applied to the base (or ["k=v", ...])
grid:                            # Cartesian product, any dotted config key
  model.scheme: [pre, lns]
  train.seed: [0, 1]
zip:                             # each group: equal-length lists that vary together
  - {model.width: [32, 64], train.lr: [3.0e-3, 2.0e-3]}
head_dim: 16                     # optional: model.heads = model.width // head_dim
compute_matched: {params: 2.0e5} # optional: per width, the depth matching N (or {flops: C})
tokens_per_param: 20             # optional: train.steps = ratio * N / (batch_size * seq_len)
param_count: kaplan              # N for the helpers: kaplan (12 D W^2) | exact (the model's)
```

`expand(spec)` returns validated RunConfigs in product order (grid axes in order, then zip
groups; the last axis varies fastest), each named by its run id. A run id is stable: a
readable prefix `<scheme>_d<depth>_w<width>` and the first 8 hex digits of the SHA-256 of
the canonical JSON of `to_dict(cfg)` without `name`, `parallel`, `data.cache_dir` and
`jaxdepth.rundir.LAYOUT_KEYS` (train.microbatches, model.attention, train.layer_stats): none
of them changes what is trained. `model.remat` is layout too, but was hashed before it was
known as such: it stays in the hash, with its default `auto` hashed as the `none` it replaced,
so that run ids are unchanged. Identical configs are merged.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxdepth.config import (
    RunConfig,
    apply_overrides,
    check_paths,
    from_dict,
    read_yaml_mapping,
    to_dict,
    validate,
)
from jaxdepth.errors import UserError
from jaxdepth.rundir import LAYOUT_KEYS
from jaxdepth.sweep import shapes

SPEC_KEYS = ("name", "base", "overrides", "grid", "zip", "head_dim", "compute_matched",
             "tokens_per_param", "param_count")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict  # nested run-config mapping, overrides applied
    grid: tuple[tuple[str, tuple], ...] = ()  # (dotted key, values)
    zips: tuple[tuple[tuple[str, ...], tuple[tuple, ...]], ...] = ()  # (keys, rows)
    head_dim: int = 0
    matched_params: float = 0.0
    matched_flops: float = 0.0
    tokens_per_param: float = 0.0
    param_count: str = "kaplan"
    path: str = ""  # where the spec was read from ("" for a mapping)
    axes: tuple[str, ...] = field(default=())  # every dotted key the spec sets per run


def set_dotted(data: dict, key: str, value: Any) -> None:
    """`data['a']['b'] = value` for key 'a.b' (value kept as typed, unlike CLI overrides)."""
    *parents, last = key.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise UserError(f"'{key}': '{p}' is not a section")
    data[last] = value


def _values(key: str, values, where: str) -> tuple:
    if not isinstance(values, list) or not values:
        raise UserError(f"{where} axis '{key}' must be a non-empty list of values, got {values!r}")
    return tuple(values)


def _number(value, key: str) -> float:
    try:  # YAML 1.1 reads "1e5" (no dot) as a string
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"sweep spec '{key}': expected a number, got {value!r}") from None
    if out < 0:
        raise UserError(f"sweep spec '{key}' must be >= 0, got {value!r}")
    return out


def load_spec(spec: str | Path | dict, overrides: list[str] = ()) -> SweepSpec:
    """A sweep spec from a YAML path or a mapping; `overrides` ("k=v") apply to the base."""
    path = None
    if not isinstance(spec, dict):
        path = Path(spec)
        spec = read_yaml_mapping(path, "sweep spec")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SPEC_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown sweep spec key '{unknown[0]}'{hint}; valid keys: "
                        f"{', '.join(SPEC_KEYS)}")
    base = spec.get("base", {})
    if isinstance(base, str):
        found = [p for p in ([path.parent / base] if path else []) + [Path(base)] if p.is_file()]
        base = read_yaml_mapping(found[0] if found else Path(base), "sweep base config")
    if not isinstance(base, dict):
        raise UserError(f"sweep spec 'base' must be a config path or a mapping, got {base!r}")
    base = json.loads(json.dumps(base))
    ov = spec.get("overrides") or {}
    if isinstance(ov, dict):
        for k, v in ov.items():
            set_dotted(base, k, v)
    else:
        base = apply_overrides(base, [str(x) for x in ov])
    base = apply_overrides(base, list(overrides))
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise UserError("sweep spec 'grid' must map dotted config keys to lists of values")
    grid_axes = tuple((k, _values(k, v, "grid")) for k, v in grid.items())
    zips = []
    for i, group in enumerate(spec.get("zip") or []):
        if not isinstance(group, dict) or not group:
            raise UserError(f"sweep spec zip[{i}] must map dotted config keys to lists")
        cols = {k: _values(k, v, f"zip[{i}]") for k, v in group.items()}
        lens = {len(v) for v in cols.values()}
        if len(lens) != 1:
            raise UserError(f"sweep spec zip[{i}]: lists must have equal lengths, got "
                            + ", ".join(f"{k}: {len(v)}" for k, v in cols.items()))
        zips.append((tuple(cols), tuple(zip(*cols.values()))))
    cm = spec.get("compute_matched") or {}
    if not isinstance(cm, dict) or (cm and set(cm) not in ({"params"}, {"flops"})):
        raise UserError("sweep spec 'compute_matched' must be {params: N} or {flops: C}, "
                        f"got {cm!r}")
    param_count = str(spec.get("param_count", "kaplan"))
    if param_count not in ("kaplan", "exact"):
        raise UserError(f"sweep spec 'param_count' must be kaplan or exact, got {param_count!r}")
    axes = [k for k, _ in grid_axes] + [k for keys, _ in zips for k in keys]
    dup = sorted({k for k in axes if axes.count(k) > 1})
    if dup:
        raise UserError(f"sweep spec sets '{dup[0]}' on more than one axis")
    out = SweepSpec(
        name=str(spec.get("name") or (path.stem if path else "sweep")), base=base,
        grid=grid_axes, zips=tuple(zips), head_dim=int(spec.get("head_dim") or 0),
        matched_params=_number(cm.get("params", 0), "compute_matched.params"),
        matched_flops=_number(cm.get("flops", 0), "compute_matched.flops"),
        tokens_per_param=_number(spec.get("tokens_per_param", 0), "tokens_per_param"),
        param_count=param_count,
        path=str(path or ""), axes=tuple(axes))
    helpers = [("model.heads", out.head_dim, "head_dim"),
               ("model.depth", out.matched_params or out.matched_flops, "compute_matched"),
               ("train.steps", out.tokens_per_param, "tokens_per_param")]
    for key, on, helper in helpers:
        if on and key in axes:
            raise UserError(f"sweep spec sets '{key}' both as an axis and through '{helper}'")
    return out


# ---------------------------------------------------------------- expansion


PARAMETERIZATION_KEYS = ("parameterization", "base_width", "base_depth", "depth_alpha",
                         "input_mult", "output_mult")
# keys added after run ids were fixed: architectures imported from Hugging Face, synthetic
# tasks; at their defaults they are left out of the hash
LATER_KEYS = ("model.kv_heads", "model.positions", "model.max_positions", "model.qkv_bias",
              "model.proj_bias", "data.task", "data.difficulty", "data.task_options",
              "data.loss_on", "train.stop_at_accuracy", "model.dwa", "model.dwa_dilation",
              "model.dwa_period", "model.mod_capacity", "model.mod_every",
              "model.mod_aux_weight", "train.early_exit_scale", "train.early_exit_curriculum",
              "train.layer_dropout")


def run_id(cfg: RunConfig) -> str:
    """`<scheme>_d<depth>_w<width>_<hash8>`: hash of the config without name, parallel and
    data.cache_dir (see the module docstring)."""
    d = to_dict(cfg)
    d.pop("name"), d.pop("parallel"), d["data"].pop("cache_dir")
    for key in LAYOUT_KEYS:  # how a run is laid out, not what it computes
        section, name = key.split(".")
        if key != "model.remat":  # hashed since the first ids (module docstring)
            d[section].pop(name)
    if d["model"]["remat"] == "auto":
        d["model"]["remat"] = "none"
    if cfg.model.parameterization == "sp":  # its keys act only under mup/completep, and sp
        for name in PARAMETERIZATION_KEYS:  # runs keep the ids they had before them
            d["model"].pop(name)
    default = to_dict(RunConfig())
    for key in LATER_KEYS:  # at their defaults, runs keep the ids they had before them
        section, name = key.split(".")
        if d[section][name] == default[section][name]:
            d[section].pop(name)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode())
    m = cfg.model
    tag = "" if m.parameterization == "sp" else f"_{m.parameterization}"
    return f"{m.scheme}{tag}_d{m.depth}_w{m.width}_{digest.hexdigest()[:8]}"


def param_measure(spec: SweepSpec, model: dict):
    """N(depth) at this model's width: 12 D W^2, or the exact non-embedding count (affine in
    depth: per-layer parameters times D plus what sits outside the layers, such as the final
    and embedding norms, from depths 1 and 2)."""
    if spec.param_count == "kaplan":
        return lambda d: shapes.kaplan_params(d, model["width"])
    mcfg = from_dict(RunConfig, {"model": model}).model
    n1, n2 = (shapes.exact_nonembed(dataclasses.replace(mcfg, depth=k)) for k in (1, 2))
    return lambda d: n1 + (n2 - n1) * (d - 1)


def _apply_helpers(spec: SweepSpec, data: dict) -> None:
    m, dcfg, t = (data.setdefault(k, {}) for k in ("model", "data", "train"))
    defaults = RunConfig()
    m.setdefault("width", defaults.model.width)
    B = dcfg.get("batch_size", defaults.data.batch_size)
    S = dcfg.get("seq_len", defaults.data.seq_len)
    if spec.head_dim:
        if m["width"] % spec.head_dim:
            raise UserError(f"model.width {m['width']} is not a multiple of head_dim "
                            f"{spec.head_dim}")
        m["heads"] = m["width"] // spec.head_dim
    n_of = param_measure(spec, m)

    def steps_at(d: int) -> int:
        if spec.tokens_per_param:
            return shapes.steps_for_tokens_per_param(spec.tokens_per_param, n_of(d), B, S)
        return t.get("steps", defaults.train.steps)

    if spec.matched_params:
        m["depth"] = shapes.matched_depth(n_of, spec.matched_params)
    elif spec.matched_flops:
        mcfg = from_dict(RunConfig, {"model": m}).model
        m["depth"] = shapes.matched_depth(
            lambda d: shapes.model_train_flops(dataclasses.replace(mcfg, depth=d), n_of(d),
                                               steps_at(d) * B * S, S),
            spec.matched_flops)
    if spec.tokens_per_param:
        t["steps"] = steps_at(m.get("depth", defaults.model.depth))


def expand(spec: SweepSpec, check_disk: bool = True) -> list[RunConfig]:
    """Every run of the spec, validated (an invalid one is a UserError naming the run and
    its axis values, before anything trains), named by its run id, duplicates merged.
    `check_disk=False` (plans) skips `check_paths`: a plan needs no corpus on this machine."""
    axes = [((k,), tuple((v,) for v in vals)) for k, vals in spec.grid] + list(spec.zips)
    runs: dict[str, RunConfig] = {}
    for combo in itertools.product(*(rows for _, rows in axes)):
        data = json.loads(json.dumps(spec.base))
        assigned = {}
        for (keys, _), row in zip(axes, combo):
            for k, v in zip(keys, row):
                set_dotted(data, k, v)
                assigned[k] = v
        where = ", ".join(f"{k}={v}" for k, v in assigned.items()) or "the base config"
        try:
            _apply_helpers(spec, data)
            data["name"] = "run"
            cfg = validate(from_dict(RunConfig, data))
            if check_disk:
                check_paths(cfg)
        except UserError as e:
            raise UserError(f"sweep '{spec.name}', run with {where}: {e}") from None
        rid = run_id(cfg)
        runs.setdefault(rid, dataclasses.replace(cfg, name=rid))
    return list(runs.values())
