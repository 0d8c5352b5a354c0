"""PNG figures of an analysis dict (see `analysis.analyze`), one run or several on one figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdepth import figures


def _title(a: dict) -> str:
    return f"{a.get('label', '')} ({a['scheme']}, depth {a['depth']}, step {a['step']})".strip()


def angular_heatmap(a: dict, path: Path) -> Path:
    """d(h_l, h_{l+n}) by first layer l and block size n, last token and all tokens."""
    from jaxdepth.diagnostics.angular import by_block_size

    L = a["depth"]
    fig, axes = figures.panels(2, 5, 4.2)
    for ax, key, name in zip(axes, ("last_token", "all_tokens"), ("last token", "all tokens")):
        grid = by_block_size(np.asarray(a["angular_distance"][key]))
        im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, aspect="auto",
                       extent=(-0.5, L - 0.5, 0.5, L + 0.5))
        ax.set_xlabel("first layer l (0 = embeddings)")
        ax.set_ylabel("block size n")
        ax.set_title(f"angular distance d(h_l, h_l+n), {name}")
        fig.colorbar(im, ax=ax, label="arccos(cos) / pi")
    fig.suptitle(_title(a))
    return figures.save(fig, path)


def removal_bars(a: dict, path: Path) -> Path:
    r = a["layer_removal"]
    thr = a["effective_depth"]["removal_threshold"]
    delta = np.asarray(r["delta"])
    fig, (ax,) = figures.panels(1, 6.5, 4)
    colors = ["tab:gray" if d < thr else "tab:blue" for d in delta]
    ax.bar(np.arange(len(delta)), delta, color=colors)
    ax.axhline(thr, color="tab:red", ls="--", lw=1, label=f"threshold {thr:g} nats")
    _symlog_from_zero(ax, delta, thr)
    ax.set_xlabel("layer removed")
    ax.set_ylabel("validation loss increase (nats, symlog)")
    ax.set_title(f"layer removal, base loss {r['base_loss']:.3f}\n{_title(a)}", fontsize=10)
    ax.legend()
    return figures.save(fig, path)


def pruning_curves(a: dict, path: Path) -> Path:
    """Loss increase when n layers are pruned, n = 1 .. L // 2, by Gromov et al.'s block of
    least last-token angular distance (arXiv 2403.17887) and by ShortGPT's n layers of least
    Block Influence (arXiv 2403.03853); and the Block Influence of each layer."""
    p = a["pruning"]
    thr = a["effective_depth"]["removal_threshold"]
    g, s = p["gromov"], p["shortgpt"]
    n = np.asarray(g["n"], int)
    fig, axes = figures.panels(2, 5.5, 4)
    ax = axes[0]
    if len(n):
        g_delta = np.asarray(g["delta"], float)  # None (undefined) -> NaN
        s_delta = np.asarray(s["delta"], float)
        ax.plot(n, g_delta, "o-", label="Gromov et al.: block of least d(h_l, h_l+n)")
        ax.plot(n, s_delta, "s--", label="ShortGPT: n layers of least BI")
        if len(n) <= 8:
            for x, l, y in zip(n, g["start"], g_delta):
                if l is not None and np.isfinite(y):
                    ax.annotate(f"[{l},{l + x})", (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color="tab:blue")
        finite = np.concatenate([g_delta, s_delta])
        finite = finite[np.isfinite(finite)]
        _symlog_from_zero(ax, finite if finite.size else np.zeros(1), thr)
        ax.axhline(thr, color="tab:red", ls=":", lw=1, label=f"{thr:g} nats")
        ax.set_xticks(n)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"depth {a['depth']}: no block of n <= L/2 layers", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xlabel("layers pruned n")
    ax.set_ylabel("validation loss increase (nats, symlog)")
    ax.set_title(f"block pruning, base loss {p['base_loss']:.3f}", fontsize=10)
    ax = axes[1]
    bi = np.asarray(p["block_influence"], float)
    pruned = set(s["layers"][-1] or ()) if s["layers"] else set()
    colors = ["tab:gray" if l in pruned else "tab:blue" for l in range(len(bi))]
    ax.bar(np.arange(len(bi)), bi, color=colors)
    if np.all(bi[np.isfinite(bi)] > 0) and np.any(np.isfinite(bi)):
        ax.set_yscale("log")
    ax.set_xlabel("layer l")
    ax.set_ylabel("Block Influence 1 - E[cos(h_l, h_l+1)]")
    ax.set_title(f"gray: ShortGPT's {len(pruned)} layers of least BI", fontsize=10)
    fig.suptitle(_title(a))
    return figures.save(fig, path)


def _symlog_from_zero(ax, values, linthresh: float) -> None:
    """Symlog y so that small costs stay visible beside the first layer's large one; the
    axis starts at 0 unless some value is negative."""
    ax.set_yscale("symlog", linthresh=max(linthresh, 1e-4))
    lo = min(0.0, float(np.min(values)) * 1.5)
    ax.set_ylim(bottom=lo)


def lens_curves(runs: list[dict], path: Path) -> Path:
    fig, axes = figures.panels(3, 13 / 3, 3.8)
    for a in runs:
        lens = a["logit_lens"]
        x = np.arange(len(lens["loss"]))
        label = a.get("label") or a["scheme"]
        line = axes[0].plot(x, lens["loss"], marker="o", label=label)[0]
        axes[0].axhline(lens["loss"][-1] * 1.1, color=line.get_color(), ls=":", lw=1)
        axes[1].plot(x, lens["kl"], marker="o", label=label)
        axes[2].plot(x, lens["top1_agreement"], marker="o", label=label)
    for ax, y in zip(axes, ("lens loss (dotted: final + 10%)", "KL(final || lens) nats",
                            "top-1 agreement with final")):
        ax.set_xlabel("hidden state (0 = embeddings, l = after layer l-1)")
        ax.set_ylabel(y)
        ax.legend(fontsize=8)
    axes[1].set_yscale("symlog", linthresh=1e-2)
    fig.suptitle("logit lens" + ("" if len(runs) > 1 else f": {_title(runs[0])}"))
    return figures.save(fig, path)


def grad_persistence(a: dict, path: Path) -> Path:
    """Per-layer gradient norms (log scale) with the fitted exp(-(L - l) / tau) line, and tau
    over training."""
    gp = a["grad_persistence"]
    fig, axes = figures.panels(2, 5.5, 4)
    ax = axes[0]
    layers = np.arange(1, a["depth"] + 1)
    for key, style in (("attn", "s--"), ("ffn", "^--"), ("layer", "o-")):
        ax.plot(layers, gp["grad_norm"][key], style, label=f"{key} ||g_l||")
    fit = gp["fit"]["layer"]
    if fit["status"] != "degenerate":
        ax.plot(layers, np.exp(fit["log_grad_last"] + fit["slope"] * (layers - a["depth"])),
                color="k", lw=1, label="fit: " + _fit_label(fit))
    ax.set_yscale("log")
    ax.set_xlabel("layer l (1-based)")
    ax.set_ylabel("gradient norm")
    ax.set_title(f"step {gp['step']}: {_title(a)}", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    over = gp["over_training"]
    steps = [r["step"] for r in over]
    ax.plot(steps, [r["slope"] for r in over], marker=".")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("fitted slope 1/tau (per layer)")
    ax.set_title("> 0: decays toward the input (finite tau)", fontsize=9)
    return figures.save(fig, path)


def _fit_label(fit: dict) -> str:
    if fit["status"] == "decaying":
        return f"tau = {fit['tau']:.2f} +- {fit['tau_stderr']:.2f}, R2 = {fit['r2']:.2f}"
    return f"slope {fit['slope']:.3f}/layer ({fit['status']}, tau = inf)"


def compare(runs: list[dict], path: Path) -> Path:
    """The Pre-LN vs LNS picture: every run's per-layer curves on shared axes."""
    fig = figures.figure(11, 8)
    axes = fig.subplots(2, 2)
    for a in runs:
        label = a.get("label") or a["scheme"]
        L = a["depth"]
        layers = np.arange(L)
        axes[0, 0].plot(layers, a["angular_distance"]["consecutive_last_token"], marker="o",
                        label=label)
        axes[0, 1].plot(layers, a["layer_removal"]["delta"], marker="o", label=label)
        axes[1, 0].plot(np.arange(L + 1), a["logit_lens"]["loss"], marker="o", label=label)
        if "grad_persistence" in a:
            axes[1, 1].plot(layers, a["grad_persistence"]["grad_norm"]["layer"], marker="o",
                            label=f"{label}, {_fit_label(a['grad_persistence']['fit']['layer'])}")
    thr = runs[0]["effective_depth"]["removal_threshold"]
    axes[0, 1].axhline(thr, color="k", ls="--", lw=0.8)
    _symlog_from_zero(axes[0, 1], np.concatenate([a["layer_removal"]["delta"] for a in runs]), thr)
    titles = [("consecutive angular distance d(h_l, h_l+1), last token", "layer l"),
              (f"loss increase when layer l is removed (dashed: {thr:g})", "layer l"),
              ("logit-lens loss", "hidden state (0 = embeddings)"),
              ("gradient norm per layer", "layer l")]
    for ax, (t, xl) in zip(axes.flat, titles):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel(xl)
        ax.legend(fontsize=8)
    axes[1, 1].set_yscale("log")
    return figures.save(fig, path)


def exit_curves(runs: list[dict], path: Path) -> Path:
    """Early exit by lens confidence (CALM, Schuster et al. 2022, arXiv 2207.07061): for one
    run, the share of tokens exiting after each layer per threshold (left); for every run,
    the loss at exit against the mean layers used, one point per threshold, the full model's
    loss dotted (right)."""
    fig, axes = figures.panels(2 if len(runs) == 1 else 1, 5.5, 4)
    if len(runs) == 1:
        ax, a = axes[0], runs[0]
        e = a["exits"]
        hist = np.asarray(e["histogram"], float) / max(e["n_tokens"], 1)
        layers = np.arange(1, hist.shape[1] + 1)
        w = 0.8 / len(hist)
        for k, (t, h) in enumerate(zip(e["thresholds"], hist)):
            ax.bar(layers + (k - (len(hist) - 1) / 2) * w, h, width=w, label=f"lambda = {t:g}")
        ax.set_xticks(layers)
        ax.set_xlabel("layers used (exit after layer l of 1..L)")
        ax.set_ylabel("fraction of tokens")
        ax.set_title(f"exit when the lens {e['measure']} confidence >= lambda", fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[-1]
    for a in runs:
        e = a["exits"]
        line = ax.plot(e["mean_depth"], e["exit_loss"], marker="o",
                       label=a.get("label") or a["scheme"])[0]
        ax.axhline(e["full_loss"], color=line.get_color(), ls=":", lw=1)
        for x, y, t in zip(e["mean_depth"], e["exit_loss"], e["thresholds"]):
            ax.annotate(f"{t:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(0.8, max(a["depth"] for a in runs) + 0.2)
    ax.set_xlabel("mean layers used")
    ax.set_ylabel("loss at exit (dotted: full model)")
    ax.set_title("loss vs layers used, one point per threshold lambda", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("early exit" + ("" if len(runs) > 1 else f": {_title(runs[0])}"))
    return figures.save(fig, path)


def all_figures(a: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [angular_heatmap(a, out_dir / "angular_distance.png"),
             removal_bars(a, out_dir / "layer_removal.png"),
             lens_curves([a], out_dir / "logit_lens.png")]
    if "pruning" in a:
        paths.append(pruning_curves(a, out_dir / "pruning.png"))
    if "exits" in a:
        paths.append(exit_curves([a], out_dir / "exits.png"))
    if "grad_persistence" in a:
        paths.append(grad_persistence(a, out_dir / "grad_persistence.png"))
    return paths
