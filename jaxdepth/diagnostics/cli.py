"""`jaxdepth analyze RUN_DIR [--step N] [--prompt TEXT] [--batches K]`: per-layer analysis of
a trained run (angular distance, layer removal, logit lens, gradient persistence), written to
RUN_DIR/analysis/ as analysis.json and PNGs; `--compare RUN_A RUN_B ...` also draws every
run on one figure and prints the comparison table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path

DEFAULT_PROMPT = "    def __init__(self"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory (several with --compare)")
    p.add_argument("--compare", action="store_true", help="analyse several runs and draw them on one figure")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest saved)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for the per-layer top tokens")
    p.add_argument("--batches", type=int, help="held-out batches (default: the run's train.eval_batches)")
    p.add_argument("--threshold", type=float, default=None,
                   help="removal cost in nats below which a layer counts as near-identity (default 0.01)")
    p.add_argument("--out", help="with --compare: directory for the joint figure (default: <parent of the first run>/compare)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_args(args) -> None:
    from jaxdepth.errors import UserError

    if len(args.run_dirs) > 1 and not args.compare:
        raise UserError(f"{len(args.run_dirs)} run directories given; analyse one, or pass --compare")
    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    if args.threshold is not None and not args.threshold >= 0:
        raise UserError(f"--threshold must be >= 0 nats, got {args.threshold}")
    if not args.prompt:
        raise UserError("--prompt must not be empty")
    for d in args.run_dirs:
        if not (Path(d) / "config.json").is_file():
            raise UserError(f"'{d}' is not a run directory (no config.json)")


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_diff(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def checked_config(run_dir: Path, step: int | None) -> tuple[int, dict]:
    """(step, config dict) of the checkpoint to analyse; UserError if there is none, the step
    was not saved, or its config differs from config.json in anything but train.steps and
    parallel. Reads no arrays, so every run is checked before any compile."""
    from jaxdepth import checkpoint
    from jaxdepth.errors import UserError

    s, ckpt_cfg = checkpoint.restore_config(run_dir, step)
    run_cfg = json.loads((run_dir / "config.json").read_text())
    # train.steps may grow (extended runs) and parallel may change (resharded resumes)
    diff = [k for k in config_diff(ckpt_cfg, run_cfg)
            if k != "train.steps" and not k.startswith("parallel.")]
    if diff:
        raise UserError(f"the checkpoint at step {s} in '{run_dir}' has a different config from its "
                        f"config.json (differs in {', '.join(diff)})")
    return s, ckpt_cfg


def load_run(run_dir: Path, step: int | None):
    """Restore a run's checkpoint: (RunConfig, resolved ModelConfig, params, step, corpus),
    resharded onto a data-parallel mesh of this machine's devices (the run's own mesh may not
    fit here); UserErrors as `checked_config`, before any compile."""
    import jax

    from jaxdepth import checkpoint
    from jaxdepth.config import RunConfig, from_dict, validate
    from jaxdepth.data.pipeline import load_corpus
    from jaxdepth.train.build import build, resolve_model

    s, ckpt_cfg = checked_config(run_dir, step)
    cfg = validate(from_dict(RunConfig, ckpt_cfg))
    corpus = load_corpus(cfg.data)
    tok = corpus.tokenizer
    mcfg = resolve_model(cfg.model, tok.vocab_size)
    pcfg = dataclasses.replace(cfg.parallel, data=-1, fsdp=1, tensor=1)
    b = build(mcfg, cfg.train, pcfg, cfg.data.seq_len, tok.pad_id)
    abstract = checkpoint.abstract_like(jax.eval_shape(b.init_state, jax.random.key(0)),
                                        b.state_shardings)
    mngr = checkpoint.manager(run_dir, read_only=True)
    try:
        _, state, _ = checkpoint.restore(mngr, abstract, step=s)
    finally:
        mngr.close()
    return cfg, mcfg, state.params, s, corpus


def analyze_run(run_dir: Path, args, progress=None) -> dict:
    """Restore, measure, write RUN_DIR/analysis/{analysis.json, *.png}; returns the analysis."""
    from jaxdepth.data.pipeline import val_batches
    from jaxdepth.diagnostics import plots
    from jaxdepth.diagnostics.analysis import REMOVAL_THRESHOLD, analyze
    from jaxdepth.train.loop import read_metrics

    cfg, mcfg, params, step, corpus = load_run(run_dir, args.step)
    tok = corpus.tokenizer
    tokens = val_batches(corpus, cfg.data, args.batches or cfg.train.eval_batches)
    prompt_ids = tok.encode(args.prompt)[-cfg.data.seq_len:]
    a = analyze(params, mcfg, tokens, tok.pad_id, records=read_metrics(run_dir), step=step,
                prompt_ids=prompt_ids, decode=tok.decode, progress=progress,
                threshold=REMOVAL_THRESHOLD if args.threshold is None else args.threshold)
    a.update(label=run_dir.name, run_dir=str(run_dir), prompt=args.prompt,
             n_batches=int(tokens.shape[0]))
    out = run_dir / "analysis"
    out.mkdir(exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(_finite_or_null(a), indent=1))
    a["figures"] = [str(p) for p in plots.all_figures(a, out)]
    return a


def _finite_or_null(x):
    """JSON has no inf/NaN: write null (the accompanying status says why)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_null(v) for v in x]
    return x


def _f(x, fmt=".4f") -> str:
    """`format(x, fmt)`, or "-" padded to the format's width for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(int(fmt.split(".")[0] or 0))
    return format(x, fmt)


def layer_table(a: dict) -> str:
    """One line per hidden state: consecutive angular distance, removal cost, lens, |g_l|."""
    D = a["depth"]
    ang, rem, lens = a["angular_distance"], a["layer_removal"], a["logit_lens"]
    g = a.get("grad_persistence", {}).get("grad_norm", {}).get("layer")
    rows = [f"{'layer':>5} {'d_last':>7} {'d_all':>7} {'remove_dL':>9} {'lens_loss':>9} "
            f"{'lens_KL':>8} {'top1':>5} {'|g_l|':>9}",
            f"{'emb':>5} {'':>7} {'':>7} {'':>9} {lens['loss'][0]:9.4f} {lens['kl'][0]:8.4f} "
            f"{lens['top1_agreement'][0]:5.2f}"]
    for l in range(D):
        rows.append(
            f"{l:>5} {ang['consecutive_last_token'][l]:7.4f} {ang['consecutive_all_tokens'][l]:7.4f} "
            f"{rem['delta'][l]:9.4f} {lens['loss'][l + 1]:9.4f} {lens['kl'][l + 1]:8.4f} "
            f"{lens['top1_agreement'][l + 1]:5.2f} {_f(g[l] if g else None, '9.3g')}")
    return "\n".join(rows)


def summary(a: dict) -> str:
    e = a["effective_depth"]
    lines = [f"{a['label']}: scheme {a['scheme']}, depth {a['depth']}, step {a['step']}, "
             f"val loss {a['layer_removal']['base_loss']:.4f} on {a['n_tokens']} tokens",
             f"near-identity layers (removal < {e['removal_threshold']:g} nats): "
             f"{e['n_near_identity']}/{a['depth']} {e['near_identity_layers']}; first hidden state "
             f"with lens loss within {e['lens_tolerance']:.0%} of final: {e['first_lens_within_tolerance']}"]
    if "grad_persistence" in a:
        fit = a["grad_persistence"]["fit"]["layer"]
        lines.append(f"gradient persistence at step {a['grad_persistence']['step']}: tau = "
                     f"{_f(fit['tau'], '.3g')} +- {_f(fit['tau_stderr'], '.2g')} layers, R^2 = "
                     f"{_f(fit['r2'], '.3f')}, slope {_f(fit['slope'], '.4f')}/layer ({fit['status']})")
    if "prompt_top_tokens" in a:
        lines.append(f"top tokens after {a['prompt']!r}:")
        for i, top in enumerate(a["prompt_top_tokens"]):
            name = "emb" if i == 0 else f"L{i - 1}"
            lines.append(f"  {name:>4}: " + "  ".join(f"{t['token']!r} {t['p']:.2f}" for t in top[:3]))
    return "\n".join(lines)


def comparison_table(runs: list[dict]) -> str:
    from jaxdepth.diagnostics.analysis import comparison_row

    head = (f"{'run':<16} {'scheme':<7} {'D':>3} {'step':>6} {'val_loss':>8} "
            f"{'d_consec_last3rd':>16} {'near_id':>7} {'tau':>7} {'tau_se':>7} {'R^2':>5} "
            f"{'slope':>7} status")
    rows = [head]
    for a in runs:
        r = comparison_row(a)
        rows.append(f"{a['label'][:16]:<16} {r['scheme']:<7} {r['depth']:>3} {r['step']:>6} "
                    f"{r['val_loss']:8.4f} {r['mean_consecutive_angular_last_third']:16.4f} "
                    f"{r['n_near_identity']:>7} {_f(r['tau'], '7.3g')} {_f(r['tau_stderr'], '7.2g')} "
                    f"{_f(r['tau_r2'], '5.2f')} {_f(r['tau_slope'], '7.3f')} {r['tau_status']}")
    return "\n".join(rows)


def run(args) -> int:
    _check_args(args)  # bad input fails here, before jax is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm.auto import tqdm

    from jaxdepth.diagnostics import plots
    from jaxdepth.diagnostics.analysis import ANALYSIS_STAGES

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        checked_config(d, args.step)
    bar = tqdm(total=ANALYSIS_STAGES * len(dirs), disable=args.no_progress, unit="stage",
               desc="analyze", dynamic_ncols=True, leave=False)

    def tick(stage):
        bar.set_postfix_str(stage)
        bar.update(1)

    try:
        runs = [analyze_run(d, args, tick) for d in dirs]
    finally:
        bar.close()
    for a in runs:
        print(layer_table(a))
        print(summary(a))
        print(f"wrote {Path(a['run_dir']) / 'analysis'}/: analysis.json, "
              + ", ".join(Path(p).name for p in a["figures"]))
        print()
    if args.compare:
        out = Path(args.out) if args.out else dirs[0].resolve().parent / "compare"
        out.mkdir(parents=True, exist_ok=True)
        paths = [plots.compare(runs, out / "compare.png"), plots.lens_curves(runs, out / "logit_lens.png")]
        from jaxdepth.diagnostics.analysis import comparison_row

        (out / "comparison.json").write_text(json.dumps(
            _finite_or_null([{"run": a["run_dir"], **comparison_row(a)} for a in runs]), indent=1))
        print(comparison_table(runs))
        print(f"wrote {out}/: comparison.json, " + ", ".join(p.name for p in paths))
    return 0
