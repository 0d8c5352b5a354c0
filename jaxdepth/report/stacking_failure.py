"""Experiment 1, stacking failure: the tutorial's three chains (docs/literature.md §2) and
the naive-stack signal figure: a stack without residual path or normalisation (scheme
`none`) explodes or collapses depending on its init scale, measured at init through real
blocks (`jaxdepth.diagnostics.signal.propagate`), with Pre-LN, Post-LN and LNS for
contrast. Run phase writes OUT/signal.json; the report reads it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdepth.diagnostics import signal as S
from jaxdepth.errors import UserError
from jaxdepth.report.specs import CONTRAST_SCHEMES, NAIVE_SCHEME, SIGNAL
from jaxdepth.rundir import read_json, write_json
from jaxdepth.tables import table


def models(size: str):
    """(label, resolved ModelConfig) of every model the signal figure propagates."""
    from jaxdepth.config import RunConfig, replace
    from jaxdepth.data.tokenizers import ByteTokenizer
    from jaxdepth.train.build import resolve_model

    p = SIGNAL[size]
    vocab = ByteTokenizer().vocab_size
    heads = max(1, p["width"] // 16)
    out = []
    runs = [(s, 0.02, s) for s in CONTRAST_SCHEMES]
    runs += [(NAIVE_SCHEME, std, f"{NAIVE_SCHEME} std {std:g}") for std in p["naive_init_stds"]]
    for scheme, std, label in runs:
        for d in p["depths"]:
            cfg = replace(RunConfig(), model=dict(scheme=scheme, depth=d, width=p["width"],
                                                  heads=heads, init_std=std))
            out.append((label, resolve_model(cfg.model, vocab)))
    return out


def run_signal(out: Path, size: str, progress: bool = True) -> None:
    from tqdm.auto import tqdm

    p = SIGNAL[size]
    profiles = []
    for label, m in tqdm(models(size), desc="signal", unit="model", disable=not progress):
        prof = S.propagate(m, batch=p["batch"], seq_len=p["seq_len"])
        profiles.append(dict(label=label, scheme=m.scheme, depth=m.depth, width=m.width,
                             init_std=m.init_std,
                             stats={k: [float(x) for x in v] for k, v in prof.stats.items()}))
    write_json(out / "signal.json", {"size": size, "profiles": profiles}, indent=None)


def chain_tables() -> list[str]:
    """The tutorial's three tables: scalar chains over 6 layers and a vector chain's norms."""
    md = []
    for name, c in S.TUTORIAL_CHAINS.items():
        rows = []
        for x0 in c["starts"]:
            s = S.chain(x0, c["a"], 6)
            rows.append({"start": f"x0 = {x0:g}", **{f"layer {i}": float(v) for i, v in
                                                     enumerate(np.ravel(s))},
                         "label": S.classify(S.norms(s), S.consecutive_cosines(s))})
        v = S.chain(list(c["vector"]), c["a"], 4)
        rows.append({"start": f"norm, x0 = {list(c['vector'])}",
                     **{f"layer {i}": float(n) for i, n in enumerate(S.norms(v))},
                     "label": S.classify(S.norms(v), S.consecutive_cosines(v))})
        cols = ["start"] + [k for k in rows[0] if k.startswith("layer")] + ["label"]
        md += [f"### {name}: x_(l+1) = {c['a']:+g} x_l", "", table(rows, cols, {
            k: ".5g" for k in cols}), ""]
    return md


def report(out: Path, meta: dict, rows=None) -> str:
    """The chains, and the signal of every model propagated at init (OUT/signal.json)."""
    from jaxdepth.diagnostics.signal_plot import rms_figure

    data = read_json(out / "signal.json")
    if data is None:
        raise UserError(f"'{out}' holds no signal.json: run `jaxdepth experiment "
                        "stacking_failure` (or with --out) to propagate the models first")
    profs = [S.Profile(p["label"], p["depth"], p["width"], "init",
                       {k: np.asarray(v, np.float64) for k, v in p["stats"].items()})
             for p in data["profiles"]]
    contrast = [p for p in profs if not p.scheme.startswith(NAIVE_SCHEME)]
    naive = [p for p in profs if p.scheme.startswith(NAIVE_SCHEME)]
    rms_figure(naive, out / "naive_stack.png", title="naive stack (no residual, no norm): "
               "residual stream RMS per layer at init, by init std")
    rms_figure(contrast, out / "contrast.png", title="Pre-LN, Post-LN, LNS at init std 0.02")
    rows = []
    for p in profs:
        s = p.summary()
        rows.append(dict(model=p.scheme, depth=p.depth, label=s["label"],
                         rms_last_over_first=s["rms_ratio"], mean_cosine=s["mean_cosine"]))
    md = ["## The tutorial's chains (rails tutorial; reproduced to 4 decimals)", "",
          *chain_tables(), "## Real blocks at init (width "
          f"{profs[0].width if profs else '?'}, random tokens)", "",
          table(rows, ["model", "depth", "label", "rms_last_over_first", "mean_cosine"],
                {"depth": "d", "rms_last_over_first": ".4g"}), "",
          "label: explode / collapse need 10x overall and 10% per layer; oscillate = sign "
          "flips of consecutive-layer cosine (jaxdepth.diagnostics.signal.classify).", "",
          "![](naive_stack.png)", "", "![](contrast.png)", ""]
    labels = {(p.scheme, p.depth): p.summary()["label"] for p in naive}
    shapes = sorted({v for v in labels.values()})
    md.append(f"Measured: the naive stack shows {', '.join(shapes)} across init scales and "
              "depths; the tutorial's expectation is explode for large init, collapse for small.")
    return "\n".join(md)

