"""The analysis of a run directory: restore a checkpoint, measure every layer
(`jaxdepth.diagnostics.analysis.analyze`) and keep the result in `analysis/analysis.json`
with what it was measured on (checkpoint step, held-out batches, removal threshold, early-exit
thresholds and measure), so a cached analysis is reused only for the same question.
`jaxdepth analyze` and the experiment reports both go through here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxdepth.errors import UserError
from jaxdepth.rundir import (
    ANALYSIS,
    CONFIG,
    jsonable,
    read_config,
    read_json,
    read_metrics,
    read_status,
    run_changes,
    write_json,
)

DEFAULT_PROMPT = "    def __init__(self"


def checked_config(run_dir: Path, step: int | None) -> tuple[int, dict]:
    """(step, config dict) of the checkpoint to analyse; UserError if there is none, the step
    was not saved, or its config differs from config.json in anything but train.steps and
    parallel. Reads no arrays, so every run is checked before any compile."""
    from jaxdepth import checkpoint

    if read_config(run_dir) is None:
        raise UserError(f"'{run_dir}' is not a run directory (no {CONFIG})")
    s, ckpt_cfg = checkpoint.restore_config(run_dir, step)
    diff = run_changes(ckpt_cfg, read_config(run_dir))
    if diff:
        raise UserError(f"the checkpoint at step {s} in '{run_dir}' has a different config from "
                        f"its {CONFIG} (differs in {', '.join(diff)})")
    return s, ckpt_cfg


def data_config(ckpt_cfg: dict, data_overrides=()):
    """The run's config with `data.*` overrides (the text an analysis measures on: source,
    seq_len, batch_size, ...); a UserError for any other key, before anything is read."""
    from jaxdepth.config import RunConfig, apply_overrides, check_paths, from_dict, validate

    bad = [o for o in data_overrides if not o.split("=", 1)[0].strip().startswith("data.")]
    if bad:
        raise UserError(f"override '{bad[0]}': an analysis may change only data.* keys (what it "
                        "measures on), not the model or its training")
    cfg = from_dict(RunConfig, apply_overrides(ckpt_cfg, list(data_overrides)))
    return check_paths(validate(cfg)) if data_overrides else validate(cfg)


def restore_model(run_dir: Path, step: int | None = None, data_overrides=()):
    """A run's params without its corpus: (RunConfig, resolved ModelConfig, params, step),
    resharded onto a data-parallel mesh of this machine's devices (the run's own mesh may not
    fit here). Only the params are read, so an imported model (`jaxdepth import`, no
    optimiser state) restores as a trained run does; the vocabulary is the one training
    resolved (status.json). `data_overrides` (`data.source=...`) change what it will be
    measured on. UserErrors as `checked_config`, before any compile."""
    import jax

    from jaxdepth import checkpoint
    from jaxdepth.train.build import build, resolve_model

    s, ckpt_cfg = checked_config(run_dir, step)
    cfg = data_config(ckpt_cfg, data_overrides)
    vocab = read_status(run_dir).get("vocab_size")
    if not (vocab or cfg.model.vocab_size):
        raise UserError(f"'{run_dir}' has no vocab_size in its status.json; was it written by "
                        "`jaxdepth train` or `jaxdepth import`?")
    mcfg = resolve_model(cfg.model, vocab or cfg.model.vocab_size)
    pcfg = dataclasses.replace(cfg.parallel, data=-1, fsdp=1, tensor=1)
    b = build(mcfg, cfg.train, pcfg, cfg.data.seq_len, -1)
    abstract = checkpoint.abstract_like(jax.eval_shape(b.init_state, jax.random.key(0)).params,
                                        b.state_shardings.params)
    return cfg, mcfg, checkpoint.restore_params(run_dir, abstract, s), s


def restore_run(run_dir: Path, step: int | None, data_overrides=()):
    """`restore_model` and the corpus it is measured on: (RunConfig, ModelConfig, params,
    step, corpus)."""
    from jaxdepth.data.pipeline import load_corpus

    cfg, mcfg, params, s = restore_model(run_dir, step, data_overrides)
    if cfg.data.task:
        raise UserError(f"'{run_dir}' trained on the synthetic task '{cfg.data.task}', which "
                        "has no text to analyse; `jaxdepth experiment capability_depth` reports "
                        "tasks (logit lens and layer removal at the answers), or give "
                        "data.task= data.source=... to measure it on a corpus")
    corpus = load_corpus(cfg.data)
    if corpus.tokenizer.vocab_size > mcfg.vocab_size:
        raise UserError(f"data.tokenizer '{cfg.data.tokenizer}' has {corpus.tokenizer.vocab_size} "
                        f"tokens, more than the model's {mcfg.vocab_size}")
    return cfg, mcfg, params, s, corpus


def analyze_run(run_dir: Path, *, step: int | None = None, batches: int | None = None,
                prompt: str = DEFAULT_PROMPT, threshold: float | None = None,
                exit_thresholds=None, exit_measure: str | None = None,
                progress=None, figures: bool = True, data_overrides=()) -> dict:
    """Restore the checkpoint at `step` (default: the newest), measure it on `batches`
    held-out batches (default: the run's train.eval_batches), with early exits at
    `exit_thresholds` by `exit_measure` (default `exits.DEFAULT_THRESHOLDS`,
    `exits.DEFAULT_MEASURE`), write RUN_DIR/analysis/analysis.json (and its figures);
    returns the analysis."""
    from jaxdepth.data.pipeline import val_batches
    from jaxdepth.diagnostics import plots
    from jaxdepth.diagnostics.analysis import REMOVAL_THRESHOLD, analyze
    from jaxdepth.diagnostics.exits import DEFAULT_MEASURE, DEFAULT_THRESHOLDS

    run_dir = Path(run_dir)
    cfg, mcfg, params, s, corpus = restore_run(run_dir, step, data_overrides)
    tok = corpus.tokenizer
    requested = batches or cfg.train.eval_batches
    tokens = val_batches(corpus, cfg.data, requested)
    a = analyze(params, mcfg, tokens, tok.pad_id, records=read_metrics(run_dir), step=s,
                prompt_ids=tok.encode(prompt)[-cfg.data.seq_len:], decode=tok.decode,
                progress=progress,
                threshold=REMOVAL_THRESHOLD if threshold is None else threshold,
                exit_thresholds=exit_thresholds or DEFAULT_THRESHOLDS,
                exit_measure=exit_measure or DEFAULT_MEASURE)
    a.update(label=run_dir.name, run_dir=str(run_dir), prompt=prompt,
             n_batches=int(tokens.shape[0]), requested_batches=requested,
             data_overrides=list(data_overrides))
    path = run_dir / ANALYSIS
    path.parent.mkdir(exist_ok=True)
    write_json(path, jsonable(a), indent=1)
    if figures:
        a["figures"] = [str(p) for p in plots.all_figures(a, path.parent)]
    return a


def cached_analysis(run_dir: Path) -> dict:
    """The analysis of the run's newest checkpoint on its own evaluation batches and the
    default removal threshold, exit thresholds and measure: `analysis/analysis.json` when it
    answers exactly that (it may have been written by `jaxdepth analyze --step N --batches K
    --threshold T`, or before early exits were measured), else measured anew (and cached).
    NaN / inf read back as None."""
    from jaxdepth import checkpoint
    from jaxdepth.diagnostics.analysis import REMOVAL_THRESHOLD
    from jaxdepth.diagnostics.exits import DEFAULT_MEASURE, DEFAULT_THRESHOLDS

    run_dir = Path(run_dir)
    step, cfg = checkpoint.restore_config(run_dir, None)
    a = read_json(run_dir / ANALYSIS)
    if (a is not None and a.get("step") == step
            and a.get("requested_batches") == cfg["train"]["eval_batches"]
            and not a.get("data_overrides")
            and a.get("effective_depth", {}).get("removal_threshold") == REMOVAL_THRESHOLD
            and a.get("exits", {}).get("thresholds") == list(DEFAULT_THRESHOLDS)
            and a.get("exits", {}).get("measure") == DEFAULT_MEASURE):
        return a
    return jsonable(analyze_run(run_dir, figures=False))
