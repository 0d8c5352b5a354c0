"""The tagging tasks (khop, state_tracking): labels right by construction (checked against
reference solvers written straight from the definitions, sharing no code with the
generators), deterministic from a seed, not leaked into the inputs, sensibly distributed,
padded, and bad settings refused with a message that names them."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdepth.data.tasks import Examples, khop, make_task, state_tracking
from jaxdepth.errors import UserError


def draw(task, n=32, seed=0, split="train") -> Examples:
    return task.generate(np.random.default_rng(seed), n, split)


# ---------------------------------------------------------------- reference solvers


def ref_hop(x: list, k: int, none) -> list:
    """hop_k(X) from Sanford, Hsu, Telgarsky 2024's definition, 1-indexed, in plain Python."""
    X = [None, *x]  # X[1..T]
    T = len(x)

    def find1(i):  # max({0} ∪ {j <= i : x_{j-1} = x_i}), find(X, 0) = 0
        if i == 0:
            return 0
        return max([0] + [j for j in range(2, i + 1) if X[j - 1] == X[i]])

    f = [find1(i) for i in range(T + 1)]
    out = []
    for i in range(1, T + 1):
        p = i
        for _ in range(k):
            p = f[p]
        out.append(X[p] if p > 0 else none)
    return out


def ref_running_products(word: list, group: str) -> list:
    """Names of p_1..p_n of a word of element names: permutations composed as tuples, g_1
    applied first (p_i(x) = g_i(p_{i-1}(x))); Z_m as sums mod m."""
    if group.startswith("Z"):
        m, s, out = int(group[1:]), 0, []
        for g in word:
            s = (s + int(g)) % m
            out.append(str(s))
        return out
    p, out = (1, 2, 3, 4, 5), []
    for g in word:
        g = tuple(int(c) for c in g)
        p = tuple(g[p[x] - 1] for x in range(5))
        out.append("".join(map(str, p)))
    return out


# ---------------------------------------------------------------- 1. correct by construction


@pytest.mark.parametrize("k,seq_len,options", [(1, 16, ""), (2, 0, ""), (3, 40, "alphabet=3"),
                                               (5, 96, "alphabet=30"), (11, 24, "alphabet=2")])
def test_khop_labels_match_reference(k, seq_len, options):
    task = make_task("khop", k, seq_len, options)
    ex = draw(task, n=24, seed=k)
    none = task.symbols.index("<none>")
    for x, y in zip(ex.inputs.tolist(), ex.targets.tolist()):
        assert y == ref_hop(x, k, none)
        assert all(a != b for a, b in zip(x, x[1:]))  # no immediate repeat: every hop moves
        assert y[-1] != none  # the scored chain exists
    assert ex.answers[:, -1].all() and not ex.answers[:, :-1].any()  # the last position scored


@pytest.mark.parametrize("group,n_len", [("S5", 12), ("A5", 9), ("Z2", 20), ("Z60", 7),
                                         ("Z1000", 5)])
def test_state_tracking_labels_match_reference(group, n_len):
    task = make_task("state_tracking", n_len, 0, f"group={group}")
    ex = draw(task, n=24, seed=n_len)
    sym = task.symbols
    for x, y in zip(ex.inputs.tolist(), ex.targets.tolist()):
        assert [sym[t] for t in y] == ref_running_products([sym[i] for i in x], group)
    assert ex.answers[:, -1].all() and not ex.answers[:, :-1].any()  # the whole word's product


def test_state_tracking_convention_g1_applied_first():
    """(1 2) then the 3-cycle 1->2->3->1: p_2 = g_2 ∘ g_1 = 32145 (the other order: 13245)."""
    names, table = state_tracking.group_table("S5")
    word = np.array([[names.index("21345"), names.index("23145")]], np.int32)
    p = state_tracking.running_products(table, word)
    assert [names[e] for e in p[0]] == ["21345", "32145"]


def test_vocabularies():
    t = make_task("khop", 1, 8, "alphabet=4")
    assert t.symbols == ("<pad>", "<none>", "a", "b", "c", "d")
    assert make_task("khop", 1, 8, "alphabet=27").symbols[2:4] == ("t0", "t1")
    s5 = make_task("state_tracking", 4, 0, "group=S5").symbols
    assert s5[0] == "<pad>" and s5[1] == "12345" and len(s5) == 121 and s5[-1] == "54321"
    a5 = make_task("state_tracking", 4, 0, "group=A5").symbols
    assert len(a5) == 61 and a5[1] == "12345" and "21345" not in a5 and "23145" in a5
    assert make_task("state_tracking", 4, 0, "group=Z3").symbols == ("<pad>", "0", "1", "2")


# ---------------------------------------------------------------- 2. deterministic


@pytest.mark.parametrize("name,difficulty,seq_len,options",
                         [("khop", 2, 32, ""), ("state_tracking", 10, 16, "group=A5")])
def test_deterministic_shapes_dtypes(name, difficulty, seq_len, options):
    task = make_task(name, difficulty, seq_len, options)
    a, b, c = draw(task, 16, seed=3), draw(task, 16, seed=3), draw(task, 16, seed=4)
    for f in ("inputs", "targets", "answers"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.inputs, c.inputs)
    assert a.inputs.shape == a.targets.shape == a.answers.shape == (16, seq_len)
    assert len(a) == 16
    assert (a.inputs.dtype, a.targets.dtype, a.answers.dtype) == (np.int32, np.int32, bool)
    assert task.seq_len == seq_len and task.symbols[0] == "<pad>" and task.description
    # ids in the vocabulary; PAD never an input within the sequence, never an answer's label
    assert a.inputs.max() < task.vocab_size and a.targets.max() < task.vocab_size
    assert (a.inputs[a.answers] != 0).all() and (a.targets[a.answers] != 0).all()


def test_default_lengths():
    assert make_task("khop").seq_len == 64 and make_task("khop").difficulty == 2
    st = make_task("state_tracking")
    assert (st.difficulty, st.seq_len) == (16, 16)


# ---------------------------------------------------------------- 3. no leakage


def test_khop_labels_depend_only_on_own_row():
    task = make_task("khop", 3, 48)
    ex = draw(task, 32, seed=1)
    perm = np.random.default_rng(0).permutation(32)
    np.testing.assert_array_equal(khop.hop_labels(ex.inputs[perm], 3), ex.targets[perm])
    for r in (0, 7):
        np.testing.assert_array_equal(khop.hop_labels(ex.inputs[r:r + 1], 3)[0], ex.targets[r])


@pytest.mark.parametrize("k", [2, 3])
def test_khop_is_not_one_hop(k):
    task, one = make_task("khop", k, 64), make_task("khop", 1, 64)
    ex = draw(task, 128, seed=5)
    one_hop = one.generate(np.random.default_rng(5), 128, "train")
    np.testing.assert_array_equal(one_hop.inputs, ex.inputs)  # same draws, k aside
    differs = (ex.targets != one_hop.targets).mean()
    assert differs > 0.25, differs


def test_state_tracking_label_needs_earlier_inputs():
    """Changing g_j changes every p_i with i >= j and none before: the label at i is not a
    function of input i alone (and is rarely equal to it)."""
    task = make_task("state_tracking", 24, 0, "group=S5")
    _, table = state_tracking.group_table("S5")
    ex = draw(task, 64, seed=2)
    word = ex.inputs - 1
    np.testing.assert_array_equal(state_tracking.running_products(table, word) + 1, ex.targets)
    j = 5
    mutated = word.copy()
    mutated[:, j] = (mutated[:, j] + 1) % 120
    p = state_tracking.running_products(table, mutated) + 1
    assert (p[:, :j] == ex.targets[:, :j]).all()
    assert (p[:, j:] != ex.targets[:, j:]).all()
    assert (mutated[:, j + 1:] == word[:, j + 1:]).all()  # same later inputs, other labels
    assert (ex.targets[:, 1:] == ex.inputs[:, 1:]).mean() < 0.05


# ---------------------------------------------------------------- 4. distributions


def test_z2_parity_balanced():
    ex = draw(make_task("state_tracking", 32, 0, "group=Z2"), 256, seed=0)
    parity = ex.targets - 1  # ids 1, 2 = "0", "1"
    assert set(np.unique(parity)) == {0, 1}
    assert 0.4 < parity.mean() < 0.6


def test_s5_a5_cover_their_groups():
    ex = draw(make_task("state_tracking", 32, 0, "group=S5"), 256, seed=0)
    assert set(np.unique(ex.inputs)) == set(range(1, 121))
    assert set(np.unique(ex.targets)) == set(range(1, 121))
    ex = draw(make_task("state_tracking", 32, 0, "group=A5"), 128, seed=0)
    assert set(np.unique(ex.inputs)) == set(range(1, 61))


def test_khop_none_fraction_rises_with_k():
    none = [(draw(make_task("khop", k, 64, "alphabet=4"), 256, seed=0).targets == 1).mean()
            for k in (1, 4, 16)]
    assert 0 < none[0] < none[1] < none[2] < 1, none
    x = draw(make_task("khop", 1, 64, "alphabet=4"), 256, seed=0).inputs
    assert set(np.unique(x)) == {2, 3, 4, 5}


# ---------------------------------------------------------------- 5. bad input


@pytest.mark.parametrize("call,match", [
    (lambda: khop.make(0, 16, {"alphabet": 4}), r"difficulty \(k\) must be >= 1, got 0"),
    (lambda: make_task("khop", -1), r"must be >= 1, got -1"),
    (lambda: make_task("khop", 2, 0, "alphabet=1"), r"alphabet must be >= 2, got 1"),
    (lambda: make_task("khop", 2, 1), r"seq_len must be >= 2"),
    (lambda: make_task("khop", 16, 8), r"16 hops need data.seq_len >= 17, got 8"),
    (lambda: make_task("khop", 12, 14).generate(np.random.default_rng(0), 4, "train"),
     r"almost never exists; use a longer data.seq_len"),
    (lambda: make_task("khop", 2, 0, "alphabet=x"), r"alphabet='x'.*expected int"),
    (lambda: make_task("state_tracking", 8, 0, "group=S6"), r"'S6'.*S5, A5, or Z<m>"),
    (lambda: make_task("state_tracking", 8, 0, "group=Z1"), r"2 <= m <= 1000, got m = 1"),
    (lambda: make_task("state_tracking", 8, 0, "group=Z1001"), r"got m = 1001"),
    (lambda: make_task("state_tracking", 32, 16), r"n = 32 needs data.seq_len >= 32"),
    (lambda: state_tracking.make(0, 0, {"group": "S5"}), r"word length n\) must be >= 1"),
    (lambda: make_task("state_tracking", 8, 0, "colour=red"), r"no option 'colour'"),
])
def test_bad_settings_refused(call, match):
    with pytest.raises(UserError, match=match):
        call()


# ---------------------------------------------------------------- 6. padding


def test_state_tracking_pads_beyond_n():
    task = make_task("state_tracking", 10, 16, "group=S5")
    ex = draw(task, 32, seed=0)
    assert (ex.inputs[:, 10:] == 0).all() and (ex.targets[:, 10:] == 0).all()
    assert not ex.answers[:, 10:].any() and ex.answers[:, 9].all() and ex.answers.sum() == 32
    assert (ex.inputs[:, :10] > 0).all()
    unpadded = draw(make_task("state_tracking", 10, 0, "group=S5"), 32, seed=0)
    np.testing.assert_array_equal(unpadded.targets, ex.targets[:, :10])
