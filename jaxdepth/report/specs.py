"""The sweep spec of every experiment at every size, as sweep-spec mappings
(`jaxdepth.sweep.load_spec` reads them). Sizes:

- tiny: CI smoke size. Every experiment shares one base shape and train config, so the
  compiled steps are reused across experiments within one process.
- default: what a 2-core CPU trains in under 30 minutes (check with `--plan`). Measured
  on an idle 2-core machine, one experiment at a time (wall time of the whole command):
  stacking_failure 45 s, depth_delusion 605 s (30 runs), gradient_persistence 689 s
  (5 runs of 1000 steps), stabilizers_vs_dcrit 934 s (60 runs), curse_of_depth 726 s (30 runs);
  curse_of_depth --connections dwa,mod,exit 1822 s (48 runs; its first 25 minutes shared
  the CPU with another experiment); lr_transfer about 45 minutes (126 runs: 2516 s of training summed over them, measured
  while other jobs shared the CPU); capability_depth 1607 s (100 runs, most stopped once
  solved).
  Two init seeds per shape where a minimum or a gap is compared across runs.
- paper: the published shapes and recipes, for a pod; only planned here
  (`jaxdepth experiment NAME --size paper --plan`). Each trains on a corpus prepared once
  with `jaxdepth prepare` into `PAPER_DATA[...]["source"]` with the paper's tokenizer (paths
  relative to the working directory; override them with `data.source=... data.tokenizer=...`),
  bfloat16 compute, float32 parameters, a remat policy and micro-batches, so that the
  papers' global batches fit a small slice.
  LNS models table and recipe (C4, T5 tokenizer, seq 256, batch 512, Adam without weight
  decay or clipping, lr 1e-3 / 5e-4, 20k-100k steps, warmup 10% but 1k for 1B):
  arXiv 2502.05795 (docs/literature.md §3). Depth Delusion W = 512, depths 2..24, Pre-LN,
  GELU, AdamW lr 3e-4, wd 0.1, clip 1, seq 1024, batch 256, SlimPajama: arXiv 2601.20994
  (docs/literature.md §4, setup marked unverified there; its tokenizer and warmup are not
  given: a Llama tokenizer (32000) and 1000 steps are this project's choice).
"""

from __future__ import annotations

from jaxdepth.config import PARAMETERIZATIONS as CONFIG_PARAMETERIZATIONS
from jaxdepth.errors import UserError

SIZES = ("tiny", "default", "paper")

# The papers' corpora, prepared with `jaxdepth prepare SOURCE --tokenizer TOK --out SOURCE`
# (README, "Running on a pod"), and their tokenizers' vocabularies rounded up to a multiple of
# 64 (T5's 32100 ids -> 32128; the LNS code builds a 32000-row model and never emits T5's 100
# sentinel ids, which here are 128 untrained rows). An explicit vocabulary lets `--plan` size
# the models before the corpus exists.
PAPER_DATA = {
    "c4_t5": dict(source="data/c4-t5", tokenizer="tokenizers/t5-base", vocab_size=32128),
    "slimpajama_llama": dict(source="data/slimpajama-llama", tokenizer="tokenizers/llama",
                             vocab_size=32000),
}


def _paper_data(name: str) -> dict:
    d = PAPER_DATA[name]
    return {"data.source": d["source"], "data.tokenizer": d["tokenizer"],
            "model.vocab_size": d["vocab_size"]}


# pod settings of every paper run: bf16 compute (float32 params and Adam moments), the layer
# input saved and the rest recomputed except matmuls without a batch axis (maxtext's
# default), and the global batch in 4 micro-batches
PAPER_POD = {"model.dtype": "bfloat16", "model.param_dtype": "float32",
             "model.remat": "dots_with_no_batch_dims_saveable", "train.microbatches": 4}

_TRAIN_SMALL = dict(lr=3.0e-3, warmup_steps=2, steps=20, log_every=5, eval_every=10,
                    eval_batches=2, ckpt_every=20)
BASES = {
    "tiny": dict(model=dict(width=32, heads=2, depth=2, scheme="pre"),
                 data=dict(source="stdlib", seq_len=32, batch_size=8), train=_TRAIN_SMALL),
    "default": dict(model=dict(width=64, heads=4, depth=4, scheme="pre"),
                    data=dict(source="stdlib", seq_len=64, batch_size=16),
                    train=dict(lr=3.0e-3, warmup_steps=30, steps=300, log_every=10,
                               eval_every=50, eval_batches=4, ckpt_every=100)),
    # The Depth Delusion setup (arXiv 2601.20994; secondary source, unverified); the corpus
    # and the pod settings come with `_paper` below.
    "paper": dict(model=dict(width=512, heads=8, depth=12, scheme="pre", ffn="gelu"),
                  data=dict(seq_len=1024, batch_size=256),
                  train=dict(lr=3.0e-4, warmup_steps=1000, steps=10000, weight_decay=0.1,
                             grad_clip=1.0, log_every=50, eval_every=1000, eval_batches=8,
                             ckpt_every=1000)),
}

# LNS paper models (arXiv 2502.05795 table): hidden, layers, heads, intermediate, lr, steps.
LNS_MODELS = {"130M": (768, 12, 12, 2048, 1e-3, 20000), "250M": (768, 24, 16, 2560, 1e-3, 40000),
              "350M": (1024, 24, 16, 2736, 5e-4, 60000), "1B": (2048, 24, 32, 5461, 5e-4, 100000)}

LNS_WARMUP = {"1B": 1000}  # warmup is 10% of the steps, except the 1B model's 1k

CURSE_SCHEMES = ["pre", "lns", "post", "mix", "deepnorm"]
STABILIZER_SCHEMES = ["pre", "lns", "deepnorm"]


def _spec(name: str, size: str, grid: dict, zips=(), overrides=None, head_dim: int = 16) -> dict:
    spec = dict(name=f"{name}_{size}", base=BASES[size], grid=grid, head_dim=head_dim)
    if zips:
        spec["zip"] = list(zips)
    if size == "paper":
        overrides = {**_paper_data("slimpajama_llama"), **PAPER_POD, **(overrides or {})}
    if overrides:
        spec["overrides"] = overrides
    return spec


def _curse(size: str) -> dict:
    if size == "paper":  # the LNS models table and recipe (arXiv 2502.05795)
        names = list(LNS_MODELS)
        col = lambda i: [LNS_MODELS[n][i] for n in names]  # noqa: E731
        return dict(
            name="curse_of_depth_paper", base=BASES["paper"],
            overrides={**_paper_data("c4_t5"), **PAPER_POD,
                       "data.seq_len": 256, "data.batch_size": 512, "model.ffn": "swiglu",
                       "train.weight_decay": 0.0, "train.grad_clip": 0.0,
                       "train.min_lr_ratio": 0.1},
            grid={"model.scheme": CURSE_SCHEMES},
            zip=[{"model.width": col(0), "model.depth": col(1), "model.heads": col(2),
                  "model.ffn_hidden": col(3), "train.lr": col(4), "train.steps": col(5),
                  "train.warmup_steps": [LNS_WARMUP.get(n, s // 10)
                                         for n, s in zip(names, col(5))]}])
    depths = {"tiny": [2, 4], "default": [3, 6, 12]}[size]
    # tiny: a compile-bound smoke test of the code path: Pre-LN, LNS and one Post-LN scheme
    schemes = CURSE_SCHEMES[:3] if size == "tiny" else CURSE_SCHEMES
    grid = {"model.scheme": schemes, "model.depth": depths}
    if size == "default":  # replicates: is a scheme's gap at depth larger than seed noise?
        grid["train.seed"] = [0, 1]
    return _spec("curse_of_depth", size, grid)


def _delusion_grid(size: str, schemes: list[str]) -> dict:
    widths = {"tiny": [16, 32, 64], "default": [32, 64, 96], "paper": [256, 512, 1024]}[size]
    depths = {"tiny": [1, 2, 4], "default": [1, 2, 4, 8, 16],
              "paper": [2, 4, 8, 12, 16, 20, 24]}[size]
    grid = {"model.scheme": schemes, "model.width": widths, "model.depth": depths}
    if size == "default":  # two init seeds: the U-curve minimum's bootstrap interval needs
        grid["train.seed"] = [0, 1]  # replicates (jaxdepth.scaling.ucurve.MIN_DOF)
    return grid


def _delusion(size: str) -> dict:
    return _spec("depth_delusion", size, _delusion_grid(size, ["pre"]),
                 head_dim=64 if size == "paper" else 16)


def _stabilizers(size: str) -> dict:
    grid = _delusion_grid(size, STABILIZER_SCHEMES)
    if size == "tiny":
        grid["model.width"] = [32]  # compiled steps shared with depth_delusion --size tiny
    if size == "default":  # three schemes: the default delusion grid minus its widest width
        grid["model.width"] = [32, 64]
    return _spec("stabilizers_vs_dcrit", size, grid, head_dim=64 if size == "paper" else 16)


def _persistence(size: str) -> dict:
    widths = {"tiny": [16, 32, 64], "default": [32, 64, 96, 128, 192],
              "paper": [256, 512, 1024, 2048]}[size]
    depth = {"tiny": 4, "default": 8, "paper": 24}[size]
    overrides = {"model.depth": depth}
    if size != "tiny":  # the paper fits tau after about 1000 steps (arXiv 2601.20994)
        overrides.update({"train.steps": 1000, "train.warmup_steps": 100})
    return _spec("gradient_persistence", size, {"model.width": widths}, overrides=overrides,
                 head_dim=64 if size == "paper" else 16)


# lr_transfer: learning rate (powers of 2) x parameterisation x shape, the shapes a width axis
# at the base depth and a depth axis at the base width, all with the same tokens per run
# (muP's transfer test, arXiv 2203.03466 Fig. 1; CompleteP's depth-wise one, arXiv
# 2505.01618; docs/literature.md §8). `base` = (base_width, base_depth): the shape whose
# multipliers are 1, where sp, mup and completep differ least.
PARAMETERIZATIONS = list(CONFIG_PARAMETERIZATIONS)  # every one: sp, mup, completep
LR_TRANSFER = {
    # tiny: a smoke test of the code path, compile-bound (one train step per run: the lr is
    # compiled in), so sp and completep only (completep's code path covers mup's), and two
    # learning rates
    "tiny": dict(log2_lrs=[-8, -5], widths=[16, 32], depths=[1, 2], base=(32, 2),
                 parameterizations=["sp", "completep"]),
    "default": dict(log2_lrs=list(range(-9, -3)), widths=[32, 64, 128, 256],
                    depths=[2, 4, 8, 16], base=(64, 4), steps=100, warmup_steps=10),
    "paper": dict(log2_lrs=list(range(-14, -7)), widths=[256, 512, 1024, 2048],
                  depths=[4, 8, 16, 32], base=(256, 8)),
}


def lr_transfer_shapes(size: str) -> list[tuple[int, int]]:
    """(width, depth) of every shape: the width axis at the base depth, then the depth axis
    at the base width (the base shape once)."""
    g = LR_TRANSFER[size]
    bw, bd = g["base"]
    shapes = [(w, bd) for w in g["widths"]] + [(bw, d) for d in g["depths"]]
    return list(dict.fromkeys(shapes))


def lr_transfer_parameterizations(size: str) -> list[str]:
    return LR_TRANSFER[size].get("parameterizations", PARAMETERIZATIONS)


def _lr_transfer(size: str) -> dict:
    g = LR_TRANSFER[size]
    shapes = lr_transfer_shapes(size)
    overrides = {"model.base_width": g["base"][0], "model.base_depth": g["base"][1]}
    if "steps" in g:
        overrides.update({"train.steps": g["steps"], "train.warmup_steps": g["warmup_steps"],
                          "train.eval_every": g["steps"], "train.ckpt_every": g["steps"]})
    grid = {"model.parameterization": lr_transfer_parameterizations(size),
            "train.lr": [2.0 ** k for k in g["log2_lrs"]]}
    return _spec("lr_transfer", size, grid, overrides=overrides,
                 zips=[{"model.width": [w for w, _ in shapes],
                        "model.depth": [d for _, d in shapes]}],
                 head_dim=64 if size == "paper" else 16)


# capability_depth: synthetic tasks whose depth need is dialled by a difficulty (docs/
# literature.md §9): for each (task, difficulty), a fixed width trained at depths 1..D on the
# same token budget, several seeds, each run stopped at the first evaluation reaching the
# exact-match criterion; plus one wide-shallow shape with the deepest model's parameter count
# (the depth-vs-width panel). Rows of `tasks`: (task, difficulties, seq_len, loss_on,
# options). Tagging tasks (khop, state_tracking) train on every position's label
# (loss_on=all, their dense supervision) and score the last; prompt-and-answer tasks train on
# the answers alone. One seq_len and a 64-entry vocabulary for khop, var_chain and A5 state
# tracking, so that their runs share compiled steps (facts has 92 symbols: a second set).
SOLVED_AT = 0.95  # exact match that counts as solved (the criterion)
CAPABILITY = {
    # CI's smoke test of the code path (every task, the wide shape, the report): compile-bound
    "tiny": dict(width=32, depths=[1, 2], wide=(1, 48), seeds=[0], steps=20, batch_size=16,
                 lr=3e-3, eval_every=10, eval_batches=2,
                 tasks=[("khop", [1, 2], 16, "all", ""),
                        ("var_chain", [1], 16, "answers", ""),
                        ("state_tracking", [2], 16, "all", "group=A5"),
                        ("facts", [2], 16, "answers", "")]),
    # what a 2-core CPU trains in under 45 minutes: depths 1-4 (a single layer does k = 1
    # induction only slowly; k = 4 needs three), the difficulties some depth solves within
    # 1200 steps, two seeds
    "default": dict(width=64, depths=[1, 2, 3, 4], wide=(1, 128), seeds=[0, 1],
                    steps=1200, batch_size=32, lr=3e-3, eval_every=100, eval_batches=8,
                    tasks=[("khop", [1, 2, 4], 40, "all", ""),
                           ("var_chain", [1, 2], 40, "answers", ""),
                           ("state_tracking", [2, 3], 40, "all", "group=A5"),
                           ("facts", [1, 2, 3], 40, "answers", "")]),
    # an accelerator's: the published tasks' sizes (hop_k to k = 16 in 128 positions, S5
    # words to 64), depths to 12, three seeds
    "paper": dict(width=256, depths=list(range(1, 13)), wide=(3, 512), seeds=[0, 1, 2],
                  steps=20000, batch_size=256, lr=1e-3, eval_every=500, eval_batches=8,
                  tasks=[("khop", [1, 2, 4, 8, 16], 136, "all", ""),
                         ("var_chain", [1, 2, 4, 8, 16], 136, "answers", ""),
                         ("state_tracking", [4, 8, 16, 32, 64], 136, "all", "group=S5"),
                         ("facts", [1, 2, 3], 136, "answers", "people=1000,cities=100,"
                          "countries=20,continents=5")]),
}


def capability_shapes(size: str) -> list[tuple[int, int]]:
    """(depth, width) of every model: the depth axis at the base width, then the wide-shallow
    shape of the deepest one's parameter count."""
    g = CAPABILITY[size]
    return [(d, g["width"]) for d in g["depths"]] + [tuple(g["wide"])]


def _capability(size: str) -> dict:
    g = CAPABILITY[size]
    rows = [(t, d, T, loss, opts) for t, ds, T, loss, opts in g["tasks"] for d in ds]
    shapes = capability_shapes(size)
    base = dict(model=dict(width=g["width"], heads=g["width"] // 16, depth=1, scheme="pre"),
                data=dict(batch_size=g["batch_size"]),
                train=dict(lr=g["lr"], warmup_steps=min(100, g["steps"] // 10),
                           steps=g["steps"], log_every=g["eval_every"],
                           eval_every=g["eval_every"], eval_batches=g["eval_batches"],
                           ckpt_every=g["steps"], stop_at_accuracy=SOLVED_AT,
                           layer_stats=False))
    spec = dict(name=f"capability_depth_{size}", base=base, head_dim=16,
                grid={"train.seed": g["seeds"]},
                zip=[{"model.depth": [d for d, _ in shapes], "model.width": [w for _, w in shapes]},
                     {"data.task": [r[0] for r in rows], "data.difficulty": [r[1] for r in rows],
                      "data.seq_len": [r[2] for r in rows], "data.loss_on": [r[3] for r in rows],
                      "data.task_options": [r[4] for r in rows]}])
    if size == "paper":
        spec["overrides"] = {"model.dtype": "bfloat16", "model.param_dtype": "float32"}
    return spec


SWEEPS = {"capability_depth": _capability, "curse_of_depth": _curse, "lr_transfer": _lr_transfer, "depth_delusion": _delusion,
          "gradient_persistence": _persistence, "stabilizers_vs_dcrit": _stabilizers}

# stacking_failure trains nothing: signal propagation at init (jaxdepth.diagnostics.signal).
SIGNAL = {
    "tiny": dict(width=32, depths=[8], naive_init_stds=[0.02, 0.5], batch=2, seq_len=16),
    "default": dict(width=64, depths=[8, 32, 128], naive_init_stds=[0.02, 0.2, 1.0], batch=4,
                    seq_len=64),
    "paper": dict(width=512, depths=[8, 32, 128], naive_init_stds=[0.02, 0.2, 1.0], batch=4,
                  seq_len=256),
}
NAIVE_SCHEME = "none"  # no residual path, no normalisation: the naive stack
CONTRAST_SCHEMES = ["pre", "post", "lns"]


# Connections beyond the residual stream (docs/literature.md §10) that curse_of_depth and
# stabilizers_vs_dcrit run beside their schemes (`--connections`), each on Pre-LN, the base of
# all three papers: DenseFormer 1x1 (arXiv 2402.02622); Mixture-of-Depths at the paper's
# 12.5% capacity in every other block (arXiv 2404.02258); LayerSkip's early-exit loss and
# layer dropout (arXiv 2404.16710; e_scale and p_max 0.1, the small end of its settings).
CONNECTIONS = {
    "dwa": {"model.dwa": True},
    "mod": {"model.mod_capacity": 0.125, "model.mod_every": 2},
    "exit": {"train.early_exit_scale": 0.1, "train.layer_dropout": 0.1},
}
CONNECTION_EXPERIMENTS = ("curse_of_depth", "stabilizers_vs_dcrit")
CONNECTION_BASE = "pre"


def parse_connections(name: str, text: str | None) -> tuple[str, ...]:
    """`--connections dwa,mod` -> ("dwa", "mod"); a UserError names a bad one."""
    if not text:
        return ()
    items = tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    bad = [c for c in items if c not in CONNECTIONS]
    if bad:
        raise UserError(f"--connections: unknown '{bad[0]}'; valid: {', '.join(CONNECTIONS)}")
    if items and name not in CONNECTION_EXPERIMENTS:
        raise UserError(f"--connections applies to {' and '.join(CONNECTION_EXPERIMENTS)}, "
                        f"not {name}")
    return items


def _spec_rows(spec: dict) -> list[dict]:
    """The spec's runs apart from the seed axis, as dotted-key rows (grid x zips)."""
    import itertools

    grid = {k: v for k, v in spec["grid"].items() if k != "train.seed"}
    rows = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    for z in spec.get("zip", []):
        zrows = [dict(zip(z, vals)) for vals in zip(*z.values())]
        rows = [{**r, **zr} for r in rows for zr in zrows]
    return rows


def _flops_per_token(spec: dict, row: dict) -> float:
    """Training FLOPs per token of one run (`shapes.model_train_flops`: routed tokens only
    in Mixture-of-Depths layers)."""
    from jaxdepth.config import RunConfig, apply_overrides, from_dict
    from jaxdepth.sweep import shapes

    dotted = {**spec.get("overrides", {}), **row}
    if spec.get("head_dim") and "model.heads" not in dotted:
        width = dotted.get("model.width", spec["base"]["model"]["width"])
        dotted["model.heads"] = width // spec["head_dim"]
    cfg = from_dict(RunConfig, apply_overrides(spec["base"], [f"{k}={v}" for k, v in dotted.items()]))
    return shapes.model_train_flops(cfg.model, shapes.exact_nonembed(cfg.model), 1,
                                    cfg.data.seq_len)


def with_connections(spec: dict, connections) -> dict:
    """The spec with each connection run beside the schemes: every Pre-LN run again with the
    connection's keys. Runs are one zip (a row per architecture and shape) crossed with the
    seeds. A Mixture-of-Depths run trains steps x FLOPs(Pre-LN) / FLOPs(MoD) steps, so that
    every run of one shape spends the same training FLOPs (the paper's isoFLOP comparison).
    DWA adds its weighted sums (under 1% of the FLOPs here) and trains the same steps, as do
    the exit runs, whose L - 1 extra unembeddings per token are not matched (a training
    objective, not an architecture; `jaxdepth bench` measures what they cost)."""
    if not connections:
        return spec
    rows = _spec_rows(spec)
    steps0 = spec.get("overrides", {}).get("train.steps", spec["base"]["train"]["steps"])
    out_rows = []
    for row in rows:
        out_rows.append(row)
        if row.get("model.scheme") != CONNECTION_BASE:
            continue
        for c in connections:
            new = {**row, **CONNECTIONS[c]}
            if c == "mod":
                steps = row.get("train.steps", steps0)
                new["train.steps"] = round(steps * _flops_per_token(spec, row)
                                           / _flops_per_token(spec, new))
            out_rows.append(new)
    from jaxdepth.config import RunConfig, get_dotted, to_dict

    defaults = {"train.steps": steps0, **{k: get_dotted(to_dict(RunConfig()), k)
                                          for c in CONNECTIONS.values() for k in c}}
    keys = list(dict.fromkeys(k for r in out_rows for k in r))
    column = {k: [r.get(k, defaults.get(k)) for r in out_rows] for k in keys}
    grid = {k: v for k, v in spec["grid"].items() if k == "train.seed"}
    return {**spec, "name": spec["name"] + "_connections", "grid": grid, "zip": [column]}


def sweep_spec(name: str, size: str, connections=()) -> dict:
    if size not in SIZES:
        raise UserError(f"unknown size '{size}'; valid sizes: {', '.join(SIZES)}")
    if name not in SWEEPS:
        raise UserError(f"experiment '{name}' has no sweep; sweeps: {', '.join(SWEEPS)}")
    return with_connections(SWEEPS[name](size), parse_connections(name, ",".join(connections)))
