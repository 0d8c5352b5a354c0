"""State tracking: the word problem of a finite group, as in Merrill & Sabharwal 2025, "A
little depth goes a long way: the expressive power of log-depth transformers" (arXiv
2503.03961), a tagging task; difficulty = the word length n.

A word g_1..g_n is drawn i.i.d. uniformly from the whole group G (identity included) and
position i (0-indexed) is labelled with the running product p_{i+1} of g_1..g_{i+1} (the
dense supervision of `data.loss_on=all`); the scored answer (`answers`) is the whole word's
product p_n, at the last position. Groups
(option `group`): "S5" (the 120 permutations of 5 points; its word problem is NC^1-complete,
Barrington 1989), "A5" (the 60 even ones, also non-solvable) and "Z<m>" (the cyclic group of
order m, 2 <= m <= 1000; "Z2" is parity).

Convention: g_1 is applied first. As maps of the points 1..5, p_0 = identity and
p_i = g_i ∘ p_{i-1}, i.e. p_i(x) = g_i(p_{i-1}(x)); for Z_m, p_i = (g_1 + ... + g_i) mod m.
Vocabulary: "<pad>", then one symbol per group element, shared by inputs and labels: a
permutation in one-line notation (the images of 1..5; "12345" is the identity), S5 in
itertools.permutations order and A5 its even elements in that order; Z_m elements "0".."m-1".
Element e has id e + 1; the identity is element 0 of every group.
"""

from __future__ import annotations

import functools
import itertools
import re

import numpy as np

from jaxdepth.data.tasks import PAD, Examples, Task
from jaxdepth.errors import UserError

DEFAULT_DIFFICULTY = 16
OPTIONS = {"group": ("S5", "the group: S5, A5, or Z<m> (cyclic of order m, 2 <= m <= 1000)")}
MAX_CYCLIC = 1000


def _is_even(perm: tuple) -> bool:
    inversions = sum(a > b for a, b in itertools.combinations(perm, 2))
    return inversions % 2 == 0


@functools.lru_cache(maxsize=8)
def group_table(group: str) -> tuple[tuple, np.ndarray]:
    """(element names, Cayley table) of `group`: table[a, b] = the element "a then b" (for
    permutations b ∘ a, for Z_m (a + b) mod m), int32 (|G|, |G|), read-only (cached);
    element 0 is the identity. A group not of the forms S5, A5, Z<m> (2 <= m <= 1000) is a
    UserError."""
    m = re.fullmatch(r"Z([0-9]+)", group)
    if m:
        order = int(m.group(1))
        if not 2 <= order <= MAX_CYCLIC:
            raise UserError(f"state_tracking: option group={group!r}: the cyclic group Z<m> "
                            f"needs 2 <= m <= {MAX_CYCLIC}, got m = {order}")
        e = np.arange(order, dtype=np.int32)
        return tuple(str(a) for a in range(order)), _frozen((e[:, None] + e[None, :]) % order)
    if group not in ("S5", "A5"):
        raise UserError(f"state_tracking: option group={group!r} is not a valid group; "
                        f"valid: S5, A5, or Z<m> with 2 <= m <= {MAX_CYCLIC} (e.g. Z2, Z60)")
    perms = list(itertools.permutations(range(1, 6)))
    if group == "A5":
        perms = [p for p in perms if _is_even(p)]
    index = {p: i for i, p in enumerate(perms)}
    # (b ∘ a)(x) = b(a(x)): in one-line notation, b's image of each of a's images
    table = np.array([[index[tuple(b[x - 1] for x in a)] for b in perms] for a in perms],
                     np.int32)
    return tuple("".join(map(str, p)) for p in perms), _frozen(table)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def running_products(table: np.ndarray, word: np.ndarray) -> np.ndarray:
    """p_1..p_n of each row of `word` (n, L) element indices: p_i = table[p_{i-1}, g_i] with
    p_0 = identity (Merrill & Sabharwal 2025, arXiv 2503.03961: the word problem of G).
    int32 (n, L)."""
    out = np.empty(word.shape, np.int32)
    p = np.zeros(len(word), np.int32)  # identity
    for i in range(word.shape[1]):
        p = out[:, i] = table[p, word[:, i]]
    return out


def make(difficulty: int, seq_len: int, options: dict) -> Task:
    n_len, group = difficulty, options.get("group", "S5")
    if n_len < 1:
        raise UserError(f"state_tracking: data.difficulty (word length n) must be >= 1, "
                        f"got {n_len}")
    T = seq_len or n_len
    if T < n_len:
        raise UserError(f"state_tracking with n = {n_len} needs data.seq_len >= {n_len} "
                        f"(or 0 for {n_len}), got {seq_len}")
    names, table = group_table(group)
    size = len(names)

    def generate(rng: np.random.Generator, n: int, split: str) -> Examples:
        word = rng.integers(0, size, (n, n_len), dtype=np.int32)
        inputs = np.zeros((n, T), np.int32)
        targets = np.zeros((n, T), np.int32)
        answers = np.zeros((n, T), bool)
        inputs[:, :n_len] = word + 1  # element e has id e + 1
        targets[:, :n_len] = running_products(table, word) + 1
        answers[:, n_len - 1] = True
        return Examples(inputs, targets, answers)

    return Task(name="state_tracking", difficulty=n_len, seq_len=T, symbols=(PAD, *names),
                generate=generate,
                description=f"a word of {n_len} elements of {group}, each position labelled "
                            f"with the running product so far (g_1 applied first); scored: "
                            "the whole word's product")
