"""Shared fixtures: tiny configs so that every test compiles small programs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jaxdepth.config import ModelConfig, RunConfig, replace

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tiny_model(**kw) -> ModelConfig:
    """A resolved (vocab set) tiny model config."""
    base = dict(depth=3, width=32, heads=2, vocab_size=64)
    base.update(kw)
    return dataclasses.replace(ModelConfig(), **base)


def tiny_run(**sections) -> RunConfig:
    """A tiny run on the embedded corpus: a few steps compile and run in seconds."""
    base = dict(
        model=dict(depth=2, width=32, heads=2),
        data=dict(seq_len=16, batch_size=4),
        train=dict(steps=6, warmup_steps=1, log_every=1, eval_every=3, eval_batches=1,
                   ckpt_every=3),
    )
    for k, v in sections.items():
        base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
    return replace(RunConfig(), **base)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the read-only shared inputs are not beside the repo)")
    return SHARED
