"""k-hop induction heads: hop_k of Sanford, Hsu, Telgarsky 2024, "Transformers, parallel
computation, and logarithmic depth" (arXiv 2402.09268), a tagging task whose depth
requirement grows like log k.

X = x_1..x_T is drawn i.i.d. uniformly over A content symbols (option `alphabet`). With
positions 1-indexed and position 0 standing for "none":

    find^1(X, i) = max({0} ∪ {j <= i : x_{j-1} = x_i})   the position right after the latest
                                                          earlier occurrence of x_i
    find^0(X, i) = i,  find^k(X, i) = find^1(X, find^{k-1}(X, i)),  find(X, 0) = 0
    hop_k(X)_i   = x_{find^k(X, i)} if find^k(X, i) > 0, else the null symbol "<none>"

difficulty = k. Every position is labelled (`targets[i]` = hop_k(X)_i, the null included:
the dense supervision of `data.loss_on=all`); the scored answer (`answers`) is the last
position's, hop_k(X)_T, the paper's output. find^1 never moves a pointer right, and one it
does not move is a fixed point (x_{i-1} = x_i), where a chain would stall for every later hop
and k would stop mattering; so, this project's choice, sequences hold no immediate repeat
(x_i is uniform over the A - 1 symbols other than x_{i-1}), every hop moves, and rows are
drawn until the last position's k-hop chain exists (its answer is never "<none>").
"""

from __future__ import annotations

import string

import numpy as np

from jaxdepth.data.tasks import PAD, Examples, Task
from jaxdepth.errors import UserError

DEFAULT_DIFFICULTY = 2
DEFAULT_SEQ_LEN = 64
NONE = "<none>"  # id 1: hop_k's null symbol
MAX_DRAWS = 64  # rounds of rejection sampling for rows whose last chain exists
OPTIONS = {"alphabet": (4, "number of content symbols A the sequence is drawn from, >= 2")}


def symbols_for(alphabet: int) -> tuple:
    """("<pad>", "<none>", then the content symbols "a", "b", ... ("t0", "t1", ... past 26))."""
    names = (string.ascii_lowercase[:alphabet] if alphabet <= 26
             else [f"t{a}" for a in range(alphabet)])
    return (PAD, NONE, *names)


def find_k(x: np.ndarray, k: int) -> np.ndarray:
    """find^k(X, i) for i = 1..T of each row of `x` (n, T) (any integer symbols), 1-indexed,
    0 = none: int (n, T). Sanford, Hsu, Telgarsky 2024 (arXiv 2402.09268):
    find^1(X, i) = max({0} ∪ {j <= i : x_{j-1} = x_i}), find^k = find^1 ∘ find^{k-1}."""
    n, T = x.shape
    # previous occurrence of each position's symbol: sort positions by symbol (stable, so
    # increasing position within a symbol); a position's predecessor in that order is its
    # latest earlier occurrence when it holds the same symbol.
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, 1)
    prev = np.full((n, T), -1, np.int64)  # 0-indexed position of the previous occurrence
    np.put_along_axis(prev, order[:, 1:],
                      np.where(xs[:, 1:] == xs[:, :-1], order[:, :-1], -1), 1)
    # find^1 as a map on 1-indexed positions 0..T: occurrence at 0-indexed p -> j = p + 2
    ptr = np.zeros((n, T + 1), np.int64)
    ptr[:, 1:] = np.where(prev >= 0, prev + 2, 0)
    pos = np.broadcast_to(np.arange(1, T + 1), (n, T))
    for _ in range(min(k, T)):  # pointers are non-increasing: stable after T hops
        pos = np.take_along_axis(ptr, pos, 1)
    return pos


def hop_labels(inputs: np.ndarray, k: int) -> np.ndarray:
    """The targets of `inputs` (n, T) content ids: the id of hop_k(X)_i, "<none>" (1) where
    find^k(X, i) = 0. int32 (n, T)."""
    inputs = np.asarray(inputs)
    with_none = np.concatenate([np.ones((len(inputs), 1), inputs.dtype), inputs], 1)
    return np.take_along_axis(with_none, find_k(inputs, k), 1).astype(np.int32)


def make(difficulty: int, seq_len: int, options: dict) -> Task:
    k, T, A = difficulty, seq_len or DEFAULT_SEQ_LEN, options.get("alphabet", 4)
    if k < 1:
        raise UserError(f"khop: data.difficulty (k) must be >= 1, got {k}")
    if T < 2:
        raise UserError(f"khop: data.seq_len must be >= 2 (or 0 for {DEFAULT_SEQ_LEN}), "
                        f"got {seq_len}")
    if A < 2:
        raise UserError(f"khop: option alphabet must be >= 2, got {A}")
    if T <= k:  # every hop moves at least one position left
        raise UserError(f"khop: {k} hops need data.seq_len >= {k + 1}, got {T}")

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        """n rows without immediate repeats: content ids 2..A+1."""
        steps = rng.integers(1, A, (n, T))  # x_i = x_{i-1} + step (mod A), step in 1..A-1
        steps[:, 0] = rng.integers(0, A, n)
        return (np.cumsum(steps, axis=1) % A + 2).astype(np.int32)

    def generate(rng: np.random.Generator, n: int, split: str) -> Examples:
        rows = []
        for _ in range(MAX_DRAWS):
            x = draw(rng, 2 * n)
            rows.append(x[find_k(x, k)[:, -1] > 0])
            if sum(map(len, rows)) >= n:
                break
        else:
            raise UserError(f"khop: a {k}-hop chain from the last of {T} positions over "
                            f"{A} symbols almost never exists; use a longer data.seq_len or "
                            "a smaller alphabet")
        inputs = np.concatenate(rows)[:n]
        answers = np.zeros((n, T), bool)
        answers[:, -1] = True
        return Examples(inputs, hop_labels(inputs, k), answers)

    return Task(name="khop", difficulty=k, seq_len=T, symbols=symbols_for(A),
                generate=generate,
                description=f"{T} symbols over {A}, no immediate repeat; every position "
                            f"labelled with hop_{k} (the induction pointer followed {k} times, "
                            "or <none>); scored: the last position's")
