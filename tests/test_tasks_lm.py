"""The language-model-form synthetic tasks (var_chain, facts): every answer recomputed from the
prompt by an independent solver, determinism, LM form, no answer leaking into the prompt, the
distributions, and bad input as a UserError. Pure numpy: a few seconds in all."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from jaxdepth.data.tasks import facts, make_task, option_values, var_chain
from jaxdepth.errors import UserError


def sequences(task, ex):
    """Each example's token sequence s_0..s_L (decoded symbols), checking the LM form and the
    padding on the way."""
    T = task.seq_len
    assert ex.inputs.shape == ex.targets.shape == ex.answers.shape == (len(ex), T)
    assert ex.inputs.dtype == ex.targets.dtype == np.int32 and ex.answers.dtype == bool
    assert task.symbols[0] == "<pad>"
    out = []
    for x, y, a in zip(ex.inputs, ex.targets, ex.answers):
        n = int((y != 0).sum())  # no token of an example is PAD, so it fills a prefix
        assert n > 0 and (y[:n] != 0).all() and (x[:n] != 0).all()
        assert (x[1:n] == y[:n - 1]).all()  # targets are the next inputs
        assert (x[n:] == 0).all() and (y[n:] == 0).all() and not a[n:].any()
        out.append([task.symbols[i] for i in np.r_[x[:1], y[:n]]])
    return out


def answer_positions(ex, i):
    return set(np.flatnonzero(ex.answers[i]).tolist())


# ---------------------------------------------------------------------------- var_chain


def solve_program(s):
    """Interpret `x = y ;` statements and answer `x ?` queries. Returns, per query, its "?"
    position in s (= its input position), the value, and the chain (root first)."""
    env, chain_of, queries, i = {}, {}, [], 0
    while i < len(s):
        if s[i + 1] == "=":
            x, y = s[i], s[i + 2]
            assert s[i + 3] == ";" and x not in env  # each variable bound once
            if y.isdigit():
                env[x], chain_of[x] = y, [x]
            else:
                env[x], chain_of[x] = env[y], chain_of[y] + [x]  # y bound before use
            i += 4
        else:
            assert s[i + 1] == "?"
            queries.append((i + 1, env[s[i]], chain_of[s[i]]))
            i += 3
    return queries


@pytest.mark.parametrize("L,opts,seq_len", [(1, "", 0), (2, "", 0), (4, "", 0),
                                            (5, "chains=3,values=3,variables=15", 80),
                                            (8, "chains=1", 0)])
def test_var_chain_answers_by_construction(L, opts, seq_len):
    task = make_task("var_chain", L, seq_len, opts)
    o = option_values("var_chain", opts)
    C = o["chains"]
    assert task.seq_len == (seq_len or C * (4 * L + 3) - 1)
    ex = task.generate(np.random.default_rng(1), 50, "train")
    for i, s in enumerate(sequences(task, ex)):
        assert len(s) == C * (4 * L + 3)
        queries = solve_program(s)
        assert len(queries) == C
        assert answer_positions(ex, i) == {q for q, _, _ in queries}
        for q, value, chain in queries:
            assert task.symbols[ex.targets[i, q]] == value and len(chain) == L
        assert len({v for _, v, _ in queries}) == C  # values distinct across chains
        assert len({c[-1] for _, _, c in queries}) == C  # every chain queried once


@pytest.mark.parametrize("name,d,opts", [("var_chain", 3, ""), ("facts", 2, "")])
def test_deterministic(name, d, opts):
    task = make_task(name, d, 0, opts)
    for split in ("train", "val"):
        a, b, c = (task.generate(np.random.default_rng(s), 16, split) for s in (7, 7, 8))
        for f in ("inputs", "targets", "answers"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert not np.array_equal(a.inputs, c.inputs)
        sequences(task, a)


def test_var_chain_no_leak():
    task = make_task("var_chain", 4, 0, "chains=3")
    ex = task.generate(np.random.default_rng(2), 200, "train")
    for s in sequences(task, ex):
        end = s.index("?") - 1  # the statements, 4 tokens each
        bound = {s[i]: s[i + 2] for i in range(0, end, 4)}
        for q, value, chain in solve_program(s):
            assert not bound[chain[-1]].isdigit()  # the queried variable is not the root
            where = [i for i, t in enumerate(s[:q]) if t == value]
            assert len(where) == 1 and s[where[0] - 2] == chain[0]  # only in its root


def test_var_chain_distribution():
    task = make_task("var_chain", 3, 0, "")
    ex = task.generate(np.random.default_rng(3), 4000, "train")
    vals = ex.targets[ex.answers].reshape(4000, 2)  # the two queries, in order
    for j in range(2):
        counts = np.bincount(vals[:, j], minlength=task.vocab_size)[-10:]
        assert counts.min() > 300 and counts.max() < 500  # 400 expected each
    # the random merge: which chain (numbered in query order) each statement belongs to; all
    # C(6, 3) = 20 interleavings of two chains of 3, uniformly (200 expected each)
    patterns = Counter()
    for s in sequences(task, ex):
        chain_no = {v: j for j, (_, _, chain) in enumerate(solve_program(s)) for v in chain}
        patterns[tuple(chain_no[s[i]] for i in range(0, 24, 4))] += 1
    assert len(patterns) == 20 and 140 < min(patterns.values()) <= max(patterns.values()) < 260


def test_var_chain_vocab_independent_of_difficulty():
    assert len({make_task("var_chain", L).symbols for L in (1, 2, 4, 8)}) == 1
    sym = make_task("var_chain", 1, 0, "variables=60").symbols
    assert sym[:5] == ("<pad>", "=", ";", "?", "a") and "v52" in sym and sym[-1] == "9"


# ---------------------------------------------------------------------------- facts


def solve_items(s, w):
    """Parse `subject r_1 .. r_h = answer ;` items; answer each by following the world's
    relations from the subject. Returns (subject, hops, "=" position, answer) per item."""
    follow = {"born_in": ("p", "c", w["born_in"]), "in_country": ("c", "k", w["in_country"]),
              "on_continent": ("k", "m", w["on_continent"])}
    out, i = [], 0
    while i < len(s):
        j = s.index("=", i)
        subject, rels = s[i], s[i + 1:j]
        kind, idx = subject[0], int(subject[1:])
        for r in rels:
            src, dst, table = follow[r]
            assert kind == src  # the chain follows the relations from the subject's level
            kind, idx = dst, int(table[idx])
        assert s[j + 2] == ";"
        out.append((subject, len(rels), j, f"{kind}{idx}"))
        i = j + 3
    return out


def checked_items(task, ex, w):
    items = []
    for i, s in enumerate(sequences(task, ex)):
        row = solve_items(s, w)
        assert answer_positions(ex, i) == {j for _, _, j, _ in row}
        assert all(task.symbols[ex.targets[i, j]] == a for _, _, j, a in row)
        items.append(row)
    return items


@pytest.mark.parametrize("h,opts,seq_len", [(1, "", 0), (2, "", 0), (3, "", 0),
                                            (2, "people=10,cities=5,countries=3,world=4", 9),
                                            (3, "heldout=0.5", 100)])
def test_facts_answers_by_construction(h, opts, seq_len):
    task = make_task("facts", h, seq_len, opts)
    assert task.seq_len == (seq_len or 63)
    w = facts.world(opts)
    held = {f"p{p}" for p in w["heldout"]}
    for split in ("train", "val"):
        ex = task.generate(np.random.default_rng(4), 40, split)
        for row in checked_items(task, ex, w):
            assert row and all(hops <= h for _, hops, _, _ in row)
            room = task.seq_len + 1 - sum(hops + 4 for _, hops, _, _ in row)
            if split == "train":
                assert 0 <= room < h + 4  # packed until the next item would not fit
            else:
                assert len(row) == 1  # one question an example: exact match per question
                if h == 1:
                    assert all(subj[0] == "p" and hops == 1 for subj, hops, _, _ in row)
                else:
                    assert all(subj in held and hops == h for subj, hops, _, _ in row)


def test_facts_heldout_never_composed_in_training():
    for h in (2, 3):
        task = make_task("facts", h)
        w = facts.world("")
        held = {f"p{p}" for p in w["heldout"]}
        assert len(held) == 16  # 0.25 of 64
        ex = task.generate(np.random.default_rng(5), 1500, "train")
        seen = Counter()
        for row in checked_items(task, ex, w):
            for subj, hops, _, _ in row:
                seen[subj, hops] += 1
                assert not (subj in held and hops >= 2)
        assert all(seen[p, 1] > 0 for p in held)  # their atomic facts are trained on
        others = {f"p{p}" for p in range(64)} - held
        assert all(seen[p, hh] > 0 for p in others for hh in range(2, h + 1))
        assert all(seen[f"c{c}", 1] > 0 for c in range(16))
        assert all(seen[f"k{k}", 1] > 0 for k in range(4))


def test_facts_world():
    a, b, c = facts.world(""), facts.world({"world": 0}), facts.world("world=1")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    for opts in ("", "world=3", "cities=4,countries=4,continents=4", "cities=5,countries=2",
                 "countries=3,continents=3,world=9"):
        o, w = option_values("facts", opts), facts.world(opts)
        assert set(w["in_country"]) == set(range(o["countries"]))  # every country a city
        assert set(w["on_continent"]) == set(range(o["continents"]))
        assert len(w["born_in"]) == o["people"] and w["born_in"].max() < o["cities"]
    assert len({make_task("facts", h).symbols for h in (1, 2, 3)}) == 1


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call,match", [
    (lambda: var_chain.make(0, 0, option_values("var_chain", "")), r"difficulty.*>= 1, got 0"),
    (lambda: facts.make(0, 0, option_values("facts", "")), r"difficulty.*1, 2 or 3, got 0"),
    (lambda: make_task("facts", 4), r"hops\) must be 1, 2 or 3, got 4"),
    (lambda: make_task("var_chain", 8, 0, "variables=10"),
     r"variables must be >= chains \* difficulty = 2 \* 8 = 16.*got 10"),
    (lambda: make_task("var_chain", 8, 32), r"chains=2 and length 8 needs data.seq_len >= 69"),
    (lambda: make_task("var_chain", 2, 0, "chains=3,values=2"), r"values must be >= chains"),
    (lambda: make_task("var_chain", 2, 0, "chains=0"), r"chains must be >= 1, got 0"),
    (lambda: make_task("facts", 3, 5), r"hops 3 needs data.seq_len >= 6"),
    (lambda: make_task("facts", 2, 0, "heldout=1.0"), r"heldout must be in \[0, 1\)"),
    (lambda: make_task("facts", 2, 0, "heldout=0"), r"heldout \* people must round to >= 1"),
    (lambda: make_task("facts", 2, 0, "cities=3"), r"cities >= countries"),
    (lambda: make_task("facts", 2, 0, "hops=2"), r"no option 'hops'"),
    (lambda: make_task("facts", 2, 0, "world=-1"), r"world .* must be >= 0, got -1"),
    (lambda: make_task("facts", 2, 0, "people=0"), r"people and continents must be >= 1"),
])
def test_bad_input(call, match):
    with pytest.raises(UserError, match=match):
        call()
    make_task("facts", 1, 0, "heldout=0")  # no held-out people needed for recall
