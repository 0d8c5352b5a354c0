"""`jaxdepth signal [--schemes pre,post,lns,none] [--depths 8,32,128] [--width 64]
[--init-std 0.02] [--out results/signal] [--run RUN_DIR [--step K]] [--chains]`:
signal propagation at init through real blocks for every (scheme, depth), and, with
`--run`, the same picture for a trained run at init and after k steps (from its
metrics.jsonl). Prints a table and writes signal.png and signal.json to --out."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

DEFAULT_SCHEMES = "pre,post,lns,none"
DEFAULT_DEPTHS = "8,32,128"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schemes", help=f"comma-separated scheme names (default {DEFAULT_SCHEMES}; "
                                     "none with --run alone)")
    p.add_argument("--depths", help=f"comma-separated depths (default {DEFAULT_DEPTHS})")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=0, help="0: width // 16 (at least 1)")
    p.add_argument("--init-std", type=float, default=0.02, help="std of every weight at init")
    p.add_argument("--batch", type=int, default=4, help="random token sequences per measurement")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="init seed (as train.seed)")
    p.add_argument("--out", default="results/signal", help="directory for signal.png/.json")
    p.add_argument("--run", help="a `jaxdepth train` run dir: its model at init and after training")
    p.add_argument("--step", type=int, help="with --run: the logged step to show (default: last)")
    p.add_argument("--chains", action="store_true", help="also print the tutorial's chains")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split(text: str, what: str, cast=str) -> list:
    from jaxdepth.errors import UserError

    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        items = [cast(t) for t in items]
    except ValueError:
        raise UserError(f"--{what} must be a comma-separated list, got '{text}'") from None
    if not items:
        raise UserError(f"--{what} is empty")
    return items


def grid_configs(args) -> list:
    """Validated, resolved ModelConfigs of the (scheme, depth) grid, before any compile."""
    from jaxdepth.config import RunConfig, replace
    from jaxdepth.data.tokenizers import ByteTokenizer
    from jaxdepth.errors import UserError
    from jaxdepth.train.build import resolve_model

    if args.batch < 1 or args.seq_len < 2:
        raise UserError(f"--batch must be >= 1 and --seq-len >= 2, got {args.batch}, "
                        f"{args.seq_len}")
    if not args.init_std > 0:
        raise UserError(f"--init-std must be > 0, got {args.init_std}")
    if args.run and args.schemes is None and args.depths is None:
        return []
    schemes = _split(args.schemes or DEFAULT_SCHEMES, "schemes")
    depths = _split(args.depths or DEFAULT_DEPTHS, "depths", int)
    heads = args.heads or max(1, args.width // 16)
    vocab = ByteTokenizer().vocab_size
    out = []
    for s in schemes:
        for d in depths:
            cfg = replace(RunConfig(), model=dict(scheme=s, depth=d, width=args.width, heads=heads,
                                                  init_std=args.init_std))
            out.append(resolve_model(cfg.model, vocab))
    return out


def logged_run(run_dir: str, step: int | None):
    """(run config, resolved model config, the metrics record at `step` or the last)."""
    from jaxdepth.errors import UserError
    from jaxdepth.rundir import open_run
    from jaxdepth.train.build import resolve_model

    cfg, status, records = open_run(run_dir)
    records = [r for r in records if "layers" in r]
    if step is None:
        rec = records[-1]
    else:
        rec = next((r for r in records if r["step"] == step), None)
        if rec is None:
            raise UserError(f"--step {step} was not logged in '{run_dir}'; logged steps: "
                            f"{', '.join(str(r['step']) for r in records[:20])}")
    return cfg, resolve_model(cfg.model, status["vocab_size"]), rec


def format_table(rows) -> str:
    """rows: (scheme, depth, when, summary) -> aligned text table."""
    from jaxdepth.tables import table

    dicts = [{"scheme": scheme, "depth": depth, "when": when, "label": s["label"],
              "rms": s["rms_ratio"], "cos": s["mean_cosine"]} for scheme, depth, when, s in rows]
    specs = {"rms": ".4g", "cos": lambda x: "n/a" if math.isnan(x) else f"{x:.4f}"}
    return table(dicts, ["scheme", "depth", "when", "label", "rms", "cos"], specs, style="text",
                 headers={"rms": "rms last/first", "cos": "mean cos"})


def chains_text() -> str:
    from jaxdepth.diagnostics import signal as S

    def line(x0, a, n, what, values, fmt):
        s = S.chain(x0, a, n)
        label = S.classify(S.norms(s), S.consecutive_cosines(s))
        nums = ", ".join(fmt(v) for v in values(s))
        return f"a={a:+g} x0={x0}: {what}{nums}  -> {label}"

    scalar = lambda v: f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.2e}"  # noqa: E731
    out = []
    for c in S.TUTORIAL_CHAINS.values():
        out += [line(x0, c["a"], 6, "", lambda s: s, scalar) for x0 in c["starts"]]
        out.append(line(list(c["vector"]), c["a"], 4, "norms ", S.norms, lambda v: f"{v:.3f}"))
    return "\n".join(out)


def _profile_dict(p) -> dict:
    return dict(scheme=p.scheme, depth=p.depth, width=p.width, when=p.when, summary=p.summary(),
                stats=p.stats)


def run(args) -> int:
    configs = grid_configs(args)  # bad input fails here, before any compile
    loaded = logged_run(args.run, args.step) if args.run else None
    from tqdm.auto import tqdm

    from jaxdepth.diagnostics.signal import profile_from_record, propagate
    from jaxdepth.diagnostics.signal_plot import rms_figure
    from jaxdepth.rundir import jsonable, write_json

    if args.chains:
        print(chains_text(), end="\n\n")
    t0 = time.time()
    grid = []
    bar = tqdm(configs, desc="signal", unit="model", disable=args.no_progress, dynamic_ncols=True)
    for m in bar:
        bar.set_postfix_str(f"{m.scheme} depth {m.depth}")
        grid.append(propagate(m, batch=args.batch, seq_len=args.seq_len, seed=args.seed))
    runs = []
    if loaded:
        cfg, m, rec = loaded
        init = propagate(m, batch=args.batch, seq_len=args.seq_len, seed=cfg.train.seed)
        runs.append((init, profile_from_record(rec, m.scheme, m.width), cfg.name))
    rows = [(p.scheme, p.depth, p.when, p.summary()) for p in grid]
    rows += [(p.scheme, p.depth, p.when, p.summary()) for r in runs for p in r[:2]]
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = ("residual stream RMS per layer, at init and after training" if not grid else
             f"residual stream RMS per layer at init (width {args.width}, init std "
             f"{args.init_std:g}, seed {args.seed})\n^ overflow or off the top, "
             "v underflow to 0 or off the bottom")
    png = rms_figure(grid, out / "signal.png", runs, title=title)
    write_json(out / "signal.json", jsonable(
        {"args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
         "profiles": [_profile_dict(p) for p in grid + [p for r in runs for p in r[:2]]]}),
        indent=1)
    print(f"wrote {png} and {out / 'signal.json'} in {time.time() - t0:.1f}s")
    return 0
