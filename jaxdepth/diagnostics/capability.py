"""Where a trained model forms a task's answer, and which layers it cannot lose: the logit
lens and layer removal scored by exact match at the answer positions of a synthetic task
(`jaxdepth.data.tasks`).

- Answer lens: the logit lens `logits_x = W_U N_final(h_x)` (nostalgebraist 2020, "interpreting
  GPT: the logit lens"; Belrose et al. 2023, arXiv 2303.08112) read at every hidden index
  x = 0..L (0 = the embeddings, x = the stream leaving layer x - 1, L = the model's output),
  scored like the model itself: argmax(logits_x) against the targets at the answer
  positions (`jaxdepth.train.step.answer_sums`: answer-token accuracy, and exact match =
  every answer of an example right).
- Answer removal: the same scores with layer l made the identity (ShortGPT, Men et al. 2024,
  arXiv 2403.03853, with exact match in place of the loss), for every l, and with none
  removed.

A task's held-out set is a list of batch dicts (`TaskData.val_batches`); `stack_batches`
stacks them so that each measurement is one `lax.scan` over the batches: one compile for
any number of batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import numpy as np

from jaxdepth.diagnostics.forward import forward_hidden, sum_over_batches, unembed
from jaxdepth.diagnostics.removal import removal_masks
from jaxdepth.train.step import answer_sums

FORMATION_FRACTION = 0.9  # the lens has formed the answer at 90% of the model's exact match


@dataclass(frozen=True)
class AnswerLens:
    exact_match: np.ndarray  # (X,) fraction of examples with every answer right, per index
    accuracy: np.ndarray  # (X,) fraction of answer tokens right
    n_examples: int
    n_answers: int


@dataclass(frozen=True)
class AnswerRemoval:
    base_exact_match: float  # every layer kept (the model's own)
    base_accuracy: float
    exact_match: np.ndarray  # (L,) with layer l the identity
    accuracy: np.ndarray  # (L,)
    n_examples: int


def stack_batches(batches: list[dict]) -> dict:
    """A list of task batch dicts -> {inputs, targets, answers}, each stacked (C, B, T)."""
    return {k: np.stack([np.asarray(b[k]) for b in batches])
            for k in ("inputs", "targets", "answers")}


@functools.partial(jax.jit, static_argnames=("mcfg",))
def lens_answer_sums(params, mcfg, batches):
    """`answer_sums` of the lens at every hidden index, each (X,), summed over a stack of
    task batches (`stack_batches`)."""

    def per_batch(batch):
        _, h_XBTW = forward_hidden(params, mcfg, batch["inputs"])
        return jax.lax.map(  # one index's logits at a time: memory of one (B, T, V)
            lambda h_BTW: answer_sums(unembed(params, mcfg, h_BTW), batch["targets"],
                                      batch["answers"]), h_XBTW)

    return sum_over_batches(per_batch, batches)


@functools.partial(jax.jit, static_argnames=("mcfg",))
def masked_answer_sums(params, mcfg, batches, masks_ML):
    """`answer_sums` of the model under each layer mask (M,) (`layer_mask_L`: False = the
    identity), summed over a stack of task batches; one compile per M."""

    def per_batch(batch):
        def sums(keep_L):
            logits_BTV, _ = forward_hidden(params, mcfg, batch["inputs"], layer_mask_L=keep_L)
            return answer_sums(logits_BTV, batch["targets"], batch["answers"])

        return jax.lax.map(sums, masks_ML)

    return sum_over_batches(per_batch, batches)


def _rates(s: dict) -> tuple[np.ndarray, np.ndarray]:
    """(exact match, accuracy) from summed `answer_sums`."""
    s = {k: np.asarray(v, np.float64) for k, v in jax.device_get(s).items()}
    return s["exact"] / np.maximum(s["examples"], 1.0), s["correct"] / np.maximum(s["answers"], 1.0)


def answer_lens(params, mcfg, batches: list[dict]) -> AnswerLens:
    """Exact match and answer-token accuracy of the logit lens at every hidden index
    x = 0..L over the held-out batches; index L equals the model's own scores."""
    s = lens_answer_sums(params, mcfg, stack_batches(batches))
    exact, acc = _rates(s)
    return AnswerLens(exact_match=exact, accuracy=acc, n_examples=int(s["examples"][0]),
                      n_answers=int(s["answers"][0]))


def answer_removal(params, mcfg, batches: list[dict]) -> AnswerRemoval:
    """Exact match and accuracy with each layer l made the identity (ShortGPT, arXiv
    2403.03853), and with none removed, over the held-out batches."""
    s = masked_answer_sums(params, mcfg, stack_batches(batches), removal_masks(mcfg.depth))
    exact, acc = _rates(s)
    return AnswerRemoval(base_exact_match=float(exact[0]), base_accuracy=float(acc[0]),
                         exact_match=exact[1:], accuracy=acc[1:],
                         n_examples=int(s["examples"][0]))


def answer_formation_layer(lens_exact, final: float,
                           fraction: float = FORMATION_FRACTION) -> int | None:
    """The first hidden index x (0 = embeddings, x = after x layers) whose lens exact match
    reaches `fraction` (90%) of the model's own exact match `final`: the layer by which the
    answer is readable from the residual stream. None when the model gets nothing right
    (final <= 0: no answer to form) or no index reaches it."""
    if not final > 0:
        return None
    hits = np.flatnonzero(np.asarray(lens_exact, np.float64) >= fraction * final)
    return int(hits[0]) if hits.size else None
