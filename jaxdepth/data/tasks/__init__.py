"""Synthetic capability tasks whose depth requirement is known or dialled by a difficulty
(docs/literature.md §9), one registry entry each (`TASKS`), deterministic from a seed:

    khop            follow the induction pointer k times (hop_k of Sanford, Hsu, Telgarsky
                    2024, arXiv 2402.09268); difficulty = k
    var_chain       variable-binding chains `a=3 ; b=a ; c=b ; ... c?` with distractor
                    chains; difficulty = chain length
    state_tracking  the running product of a word over S5, A5 or Z_m (Merrill & Sabharwal
                    2025, arXiv 2503.03961); difficulty = word length n
    facts           a synthetic world of facts memorised in the weights (Geva et al. 2021,
                    arXiv 2012.14913), recalled (1 hop) or composed (2, 3 hops);
                    difficulty = hops

An example is one row of `inputs` (T token ids), `targets` (T ids: what each input position
predicts; PAD where nothing is) and `answers` (T bools: the targets that are answers, the
ones exact-match accuracy scores). A task whose answer follows a prompt is in language-model
form (targets = the next input token); a task labelled at every position (khop,
state_tracking) is a tagging task: its labels are never inputs. Exact match = every answer
of an example right.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from jaxdepth.errors import UserError

PAD = "<pad>"  # id 0 of every task's vocabulary

# task name -> module (jaxdepth.data.tasks.<module>) defining `make(difficulty, seq_len,
# options) -> Task`, `DEFAULT_DIFFICULTY` and `OPTIONS` (option -> (default, meaning))
TASKS = {"khop": "khop", "var_chain": "var_chain", "state_tracking": "state_tracking",
         "facts": "facts"}


@dataclass(frozen=True)
class Examples:
    inputs: np.ndarray  # int32 (n, T)
    targets: np.ndarray  # int32 (n, T), PAD (0) where nothing is predicted
    answers: np.ndarray  # bool (n, T), True where targets[i, t] is an answer

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class Task:
    """One task at one difficulty: its vocabulary and a generator of examples.
    `generate(rng, n, split)`: n examples drawn with the numpy Generator `rng`, of split
    "train" or "val" (tasks whose held-out set differs from training, like `facts`' unseen
    compositions, use it; others draw both alike from different seeds)."""

    name: str
    difficulty: int
    seq_len: int
    symbols: tuple  # id -> printable symbol; symbols[0] == PAD
    generate: object  # (rng, n, split) -> Examples
    description: str = ""  # one line: what an example looks like

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def decode(self, ids) -> str:
        return " ".join(self.symbols[int(i)] for i in ids if int(i) != 0)


def parse_options(text: str) -> dict[str, str]:
    """`"alphabet=4,group=S5"` -> {"alphabet": "4", "group": "S5"} ("" -> {})."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise UserError(f"data.task_options item '{item}' is not of the form name=value "
                            "(e.g. data.task_options=alphabet=4,group=S5)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def task_module(name: str):
    if name not in TASKS:
        raise UserError(f"data.task '{name}' is unknown; tasks: {', '.join(TASKS)}")
    return importlib.import_module(f"jaxdepth.data.tasks.{TASKS[name]}")


def option_values(name: str, options: str | dict) -> dict:
    """A task's options with defaults filled and values typed like their defaults; an unknown
    option or a bad value is a UserError listing the valid ones."""
    spec = task_module(name).OPTIONS
    given = parse_options(options) if isinstance(options, str) else dict(options)
    out = {k: d for k, (d, _) in spec.items()}
    for k, v in given.items():
        if k not in spec:
            valid = ", ".join(f"{o} ({m}; default {d})" for o, (d, m) in spec.items())
            raise UserError(f"task {name} has no option '{k}'; its options: {valid or 'none'}")
        typ = type(spec[k][0])
        try:
            out[k] = typ(v)
        except ValueError:
            raise UserError(f"task {name} option {k}={v!r}: expected {typ.__name__} "
                            f"({spec[k][1]})") from None
    return out


def make_task(name: str, difficulty: int = 0, seq_len: int = 0, options: str | dict = "") -> Task:
    """The task `name` at `difficulty` (0: its default) in sequences of `seq_len` input
    positions (0: the shortest that fits); a bad difficulty, option or length is a UserError
    that says what would fit."""
    mod = task_module(name)
    return mod.make(difficulty or mod.DEFAULT_DIFFICULTY, seq_len, option_values(name, options))


def task_of(dcfg) -> Task:
    """The task a data config names (`data.task`, `data.difficulty`, `data.seq_len`,
    `data.task_options`)."""
    return make_task(dcfg.task, dcfg.difficulty, dcfg.seq_len, dcfg.task_options)


def padded(rows: list[tuple], seq_len: int) -> Examples:
    """Examples from a list of (inputs, targets, answers) 1-d sequences of length <= seq_len,
    each padded with PAD (id 0, not an answer) to seq_len."""
    n = len(rows)
    inputs = np.zeros((n, seq_len), np.int32)
    targets = np.zeros((n, seq_len), np.int32)
    answers = np.zeros((n, seq_len), bool)
    for i, (x, y, a) in enumerate(rows):
        inputs[i, :len(x)], targets[i, :len(y)], answers[i, :len(a)] = x, y, a
    return Examples(inputs, targets, answers)


def lm_form(tokens: np.ndarray, answer_tokens: np.ndarray) -> tuple:
    """(inputs, targets, answers) of a prompt-and-answer sequence in language-model form:
    inputs = tokens[:-1], targets = tokens[1:], answers = answer_tokens[1:] (the positions
    whose next token is an answer token)."""
    tokens = np.asarray(tokens, np.int32)
    return tokens[:-1], tokens[1:], np.asarray(answer_tokens, bool)[1:]
