"""Variable-binding chains: a program of assignments, then the value of each chain's last
variable. Trained transformers resolve such chains by moving the value about one binding per
layer (Wu, Geiger & Millière 2025, "How Do Transformers Learn Variable Binding in Symbolic
Programs?", arXiv 2505.20896, the "Variable Scope" analyses; docs/literature.md §9), so the
chain length dials the depth the task needs.

difficulty = L, the bindings per chain. An example holds C chains (option `chains`), each over
L fresh variables v_1..v_L with its own value d (values distinct across the chains):

    v_1 = d ;   v_2 = v_1 ;   ...   v_L = v_(L-1) ;          (4 tokens a statement)

The C * L statements are interleaved in a uniformly random merge that keeps each chain's own
statements in order; variable names are distinct across the example (drawn without
replacement from a pool of `variables` names). Then one query per chain, chains in random
order: `v_L ? d` (3 tokens), whose answer d is the target at the "?" position. Language-model
form: inputs = s[:-1], targets = s[1:], C answers an example, C * (4L + 3) tokens, so the
shortest fit is T = C * (4L + 3) - 1 input positions. train and val are drawn alike.
"""

from __future__ import annotations

import string

import numpy as np

from jaxdepth.data.tasks import PAD, Task, lm_form, padded
from jaxdepth.errors import UserError

DEFAULT_DIFFICULTY = 4
OPTIONS = {
    "chains": (2, "chains per example, all of them queried, >= 1"),
    "variables": (40, "size of the variable-name pool, >= chains * difficulty"),
    "values": (10, "number of value symbols 0..values-1, >= chains"),
}
EQ, SEMI, QUERY = 1, 2, 3  # ids of "=", ";", "?"; variables from id 4, then the values


def symbols_for(variables: int, values: int) -> tuple:
    """("<pad>", "=", ";", "?", variable names "a".."z", "A".."Z", "v52", "v53"..., values
    "0".."values-1"): the vocabulary depends on the options, never on the difficulty."""
    letters = string.ascii_lowercase + string.ascii_uppercase
    names = [letters[i] if i < len(letters) else f"v{i}" for i in range(variables)]
    return (PAD, "=", ";", "?", *names, *(str(d) for d in range(values)))


def tokens_needed(chains: int, length: int) -> int:
    """Tokens of one example: C * L statements of 4 tokens, C queries of 3."""
    return chains * (4 * length + 3)


def programs(rng: np.random.Generator, n: int, L: int, C: int, V: int, D: int) -> tuple:
    """n examples' token ids (n, C*(4L+3)) and answer-token mask, vectorised over examples."""
    var0, val0 = 4, 4 + V
    names = var0 + rng.random((n, V)).argsort(1)[:, :C * L].reshape(n, C, L)
    vals = val0 + rng.random((n, D)).argsort(1)[:, :C]  # (n, C), distinct in a row
    # statement k of chain c: names[c, k] = (vals[c] if k == 0 else names[c, k-1])
    rhs = np.concatenate([vals[:, :, None], names[:, :, :-1]], 2)
    # random merge: a uniform shuffle of the multiset {c repeated L times}, the j-th
    # occurrence of c taking chain c's j-th statement
    chain = np.repeat(np.arange(C), L)[rng.random((n, C * L)).argsort(1)]  # (n, C*L)
    step = np.cumsum(chain[:, :, None] == np.arange(C), 1) - 1  # (n, C*L, C)
    step = np.take_along_axis(step, chain[:, :, None], 2)[:, :, 0]
    rows = np.arange(n)[:, None]
    stmts = np.stack([names[rows, chain, step], np.full((n, C * L), EQ),
                      rhs[rows, chain, step], np.full((n, C * L), SEMI)], 2)
    order = rng.random((n, C)).argsort(1)  # query order
    queries = np.stack([names[rows, order, L - 1], np.full((n, C), QUERY),
                        vals[rows, order]], 2)
    tokens = np.concatenate([stmts.reshape(n, -1), queries.reshape(n, -1)], 1)
    is_answer = np.zeros(tokens.shape, bool)
    is_answer[:, 4 * C * L + 2::3] = True
    return tokens, is_answer


def make(difficulty: int, seq_len: int, options: dict) -> Task:
    L, C = difficulty, options.get("chains", 2)
    V, D = options.get("variables", 40), options.get("values", 10)
    if L < 1:
        raise UserError(f"var_chain: data.difficulty (bindings per chain) must be >= 1, got {L}")
    if C < 1:
        raise UserError(f"var_chain: option chains must be >= 1, got {C}")
    if D < C:
        raise UserError(f"var_chain: option values must be >= chains ({C}): each chain has "
                        f"its own value, got values={D}")
    if V < C * L:
        raise UserError(f"var_chain: option variables must be >= chains * difficulty = "
                        f"{C} * {L} = {C * L} (names are distinct in an example), got {V}")
    need = tokens_needed(C, L) - 1
    T = seq_len or need
    if T < need:
        raise UserError(f"var_chain with chains={C} and length {L} needs data.seq_len >= "
                        f"{need} (or 0 for that), got {seq_len}")

    def generate(rng: np.random.Generator, n: int, split: str):
        tokens, is_answer = programs(rng, n, L, C, V, D)
        return padded([lm_form(t, a) for t, a in zip(tokens, is_answer)], T)

    return Task(name="var_chain", difficulty=L, seq_len=T, symbols=symbols_for(V, D),
                generate=generate,
                description=f"{C} chains of {L} bindings `a = 3 ; b = a ; ...` randomly "
                            f"interleaved, then `<last variable> ? <value>` per chain")
