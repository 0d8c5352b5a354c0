"""A synthetic task as training data: batches generated on the fly, deterministic from
`data.seed`, through the same grain iterator (checkpointable) as a prepared corpus.

Batch i of a split is generated whole from the seed sequence (data.seed, split, i), then
each process keeps its rows [p * b, (p + 1) * b): the global batch is the same whatever the
process count. The validation set is a fixed stack of batches from its own seed stream.
A batch: inputs, targets (int32), weights (float32: the loss's, 1 on every target under
`data.loss_on=all`, on the answers alone under `answers`) and answers (bool), each (b, T).
"""

from __future__ import annotations

from dataclasses import dataclass

import grain
import numpy as np

from jaxdepth.data.pipeline import per_process_batch
from jaxdepth.data.tasks import Examples, Task, task_of
from jaxdepth.errors import UserError

SPLITS = {"train": 0, "val": 1}
N_BATCHES = 2**31 - 1  # the endless stream's nominal length (grain needs one)


def batch_arrays(ex: Examples, loss_on: str) -> dict:
    """The training batch of a set of examples (see the module docstring)."""
    if loss_on == "answers":
        weights = ex.answers
    else:
        weights = ex.targets != 0  # every target (0 = PAD: nothing predicted there)
    return dict(inputs=ex.inputs, targets=ex.targets, weights=weights.astype(np.float32),
                answers=ex.answers)


@dataclass(frozen=True)
class TaskBatches:
    """grain source: item i = global batch i of a split of the task."""

    task: Task
    split: str
    seed: int
    batch_size: int
    loss_on: str

    def __len__(self) -> int:
        return N_BATCHES

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], int(i)])
        return batch_arrays(self.task.generate(rng, self.batch_size, self.split), self.loss_on)


@dataclass(frozen=True)
class TaskData:
    """A task standing where a prepared corpus stands in the train loop."""

    task: Task
    dcfg: object

    @property
    def tokenizer(self):
        return TaskTokenizer(self.task)

    def bytes_per_token(self, split: str) -> None:
        return None

    def train_iterator(self, process_index: int = 0, process_count: int = 1):
        d = self.dcfg
        b = per_process_batch(d.batch_size, process_count)
        rows = slice(process_index * b, (process_index + 1) * b)
        ds = (grain.MapDataset.source(TaskBatches(self.task, "train", d.seed, d.batch_size,
                                                  d.loss_on))
              .map(lambda batch: {k: v[rows] for k, v in batch.items()}))
        opts = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
        return iter(ds.to_iter_dataset(read_options=opts))

    def val_batches(self, n_batches: int, process_index: int = 0,
                    process_count: int = 1) -> list[dict]:
        """`n_batches` fixed held-out batches (the same at every evaluation), this process's
        rows of each."""
        d = self.dcfg
        src = TaskBatches(self.task, "val", d.seed, d.batch_size, d.loss_on)
        b = per_process_batch(d.batch_size, process_count)
        rows = slice(process_index * b, (process_index + 1) * b)
        return [{k: v[rows] for k, v in src[i].items()} for i in range(n_batches)]


class TaskTokenizer:
    """A task's vocabulary behind the tokenizer interface the train loop reads (ids are the
    task's symbols; PAD = 0 is also the EOS, which a task never emits)."""

    kind = "task"
    bos_id = None
    pad_id = eos_id = 0

    def __init__(self, task: Task):
        self.task = task
        self.spec = self.identity = f"task:{task.name}"
        self.vocab_size = task.vocab_size

    def decode(self, ids) -> str:
        return self.task.decode(ids)

    def save(self, path) -> None:
        """Nothing to save: the vocabulary follows from data.task and data.task_options."""


def load_task(dcfg) -> TaskData:
    """The task a data config names, checked (a UserError before anything compiles)."""
    if dcfg.loss_on not in ("all", "answers"):
        raise UserError(f"data.loss_on '{dcfg.loss_on}' is unknown; valid: all, answers")
    return TaskData(task_of(dcfg), dcfg)
