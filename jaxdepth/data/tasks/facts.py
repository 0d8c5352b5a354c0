"""Facts of a synthetic world, memorised in the weights and recalled (1 hop) or composed
(2, 3 hops). Transformer FFN layers act as key-value memories of such facts (Geva, Schuster,
Berant & Levy 2021, "Transformer Feed-Forward Layers Are Key-Value Memories", arXiv
2012.14913); composing two memorised facts is the two-hop reasoning of Wang, Yue, Su & Sun 2024
("Grokked Transformers are Implicit Reasoners", arXiv 2405.15071), where shallow models fail
first (docs/literature.md §9).

The world is fixed by option `world`, independently of the data seed (`world(options)`
returns it): each of `people` people is born in one of `cities` cities, each city is in one of
`countries` countries, each country on one of `continents` continents, each assignment as
even as possible (round-robin in a random order: no answer is common enough to guess). An item is `subject r_1 .. r_h = answer ;`:

    p3 born_in = c7 ;                                   atomic facts (h = 1), at every level:
    c7 in_country = k1 ;    k1 on_continent = m0 ;      person, city and country subjects
    p3 born_in in_country = k1 ;                        2 hops from a person
    p3 born_in in_country on_continent = m0 ;           3 hops from a person

The answer is the target at the "=" position (language-model form). difficulty = h. A
fraction `heldout` of the people (fixed by the world) never has a multi-hop question in
training. train: items drawn uniformly from every atomic fact plus the 2..h-hop questions of
the other people, packed back to back until the next would not fit in T + 1 tokens. val: for
h = 1 the `person born_in = city ;` facts of all people (recall); for h >= 2 the h-hop
questions of the held-out people (composition never seen composed), one question per
example, so that exact match scores each question alone (and nothing else in the example
tells its answer).
"""

from __future__ import annotations

import numpy as np

from jaxdepth.data.tasks import PAD, Task, lm_form, option_values, padded
from jaxdepth.errors import UserError

DEFAULT_DIFFICULTY = 2
DEFAULT_SEQ_LEN = 63  # 64 tokens a sequence
OPTIONS = {
    "world": (0, "seed of the synthetic world (independent of the data seed)"),
    "people": (64, "number of people, >= 1"),
    "cities": (16, "number of cities, >= countries"),
    "countries": (4, "number of countries, >= continents"),
    "continents": (2, "number of continents, >= 1"),
    "heldout": (0.25, "fraction of people with no multi-hop question in training, in [0, 1)"),
}
RELATIONS = ("born_in", "in_country", "on_continent")
EQ, SEMI = 1, 2  # ids of "=" and ";"; the relations are ids 3, 4, 5, then the entities
WORLD_TAG = 0xFAC75  # mixed into the world's seed so it never shares a stream with the data


def symbols_for(o: dict) -> tuple:
    """("<pad>", "=", ";", relations, people "p0".., cities "c0".., countries "k0"..,
    continents "m0.."): depends on the world's sizes, never on the difficulty."""
    return (PAD, "=", ";", *RELATIONS, *(f"p{i}" for i in range(o["people"])),
            *(f"c{i}" for i in range(o["cities"])), *(f"k{i}" for i in range(o["countries"])),
            *(f"m{i}" for i in range(o["continents"])))


def _onto(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """n items each mapped to one of m targets as evenly as possible (round-robin, in a
    random order): every target is hit (n >= m), and no answer is common enough that
    guessing it scores (an uneven world let a constant 3-hop answer reach 88% exact match)."""
    return rng.permutation(np.arange(n) % m)


def world(options: dict | str = "") -> dict:
    """The world of the `facts` options (defaults filled in): int arrays "born_in" (person ->
    city), "in_country" (city -> country), "on_continent" (country -> continent), and
    "heldout" (the sorted held-out people). A function of the options alone."""
    o = option_values("facts", options)
    if o["world"] < 0:
        raise UserError(f"facts: option world (the world's seed) must be >= 0, got {o['world']}")
    rng = np.random.default_rng([o["world"], WORLD_TAG])
    P = o["people"]
    in_country = _onto(rng, o["cities"], o["countries"])
    on_continent = _onto(rng, o["countries"], o["continents"])
    born_in = _onto(rng, P, o["cities"]) if P >= o["cities"] else rng.integers(0, o["cities"], P)
    heldout = np.sort(rng.permutation(P)[:n_heldout(o)])
    return {"born_in": born_in, "in_country": in_country, "on_continent": on_continent,
            "heldout": heldout}


def n_heldout(o: dict) -> int:
    """How many people are held out: heldout * people, rounded."""
    return round(o["heldout"] * o["people"])


def items(w: dict, o: dict) -> dict:
    """Every item of the world as token ids, by kind: "atomic" (all h = 1 facts), and
    (2, p) / (3, p): person p's 2- and 3-hop questions."""
    P, Ci, K = o["people"], o["cities"], o["countries"]
    person, city = 6, 6 + P
    country, continent = city + Ci, city + Ci + K
    rel = (3, 4, 5)
    atomic = ([[person + p, rel[0], EQ, city + c, SEMI] for p, c in enumerate(w["born_in"])]
              + [[city + c, rel[1], EQ, country + k, SEMI] for c, k in enumerate(w["in_country"])]
              + [[country + k, rel[2], EQ, continent + m, SEMI]
                 for k, m in enumerate(w["on_continent"])])
    out = {"atomic": atomic}
    for p, c in enumerate(w["born_in"]):
        k = w["in_country"][c]
        out[2, p] = [person + p, rel[0], rel[1], EQ, country + k, SEMI]
        out[3, p] = [person + p, rel[0], rel[1], rel[2], EQ, continent + w["on_continent"][k],
                     SEMI]
    return out


def validate(h: int, seq_len: int, o: dict) -> int:
    """The sequence length T (seq_len, or the default for 0); a UserError on a bad value."""
    if not 1 <= h <= 3:
        raise UserError(f"facts: data.difficulty (hops) must be 1, 2 or 3, got {h}")
    if o["people"] < 1 or o["continents"] < 1:
        raise UserError(f"facts: options people and continents must be >= 1, got "
                        f"people={o['people']}, continents={o['continents']}")
    if not o["cities"] >= o["countries"] >= o["continents"]:
        raise UserError(f"facts: options need cities >= countries >= continents (every country "
                        f"a city, every continent a country), got cities={o['cities']}, "
                        f"countries={o['countries']}, continents={o['continents']}")
    if not 0 <= o["heldout"] < 1:
        raise UserError(f"facts: option heldout must be in [0, 1), got {o['heldout']}")
    if h >= 2 and n_heldout(o) < 1:
        raise UserError(f"facts with hops {h} validates on held-out people: option heldout * "
                        f"people must round to >= 1, got {o['heldout']} * {o['people']}")
    T = seq_len or DEFAULT_SEQ_LEN
    if T + 1 < h + 4:
        raise UserError(f"facts with hops {h} needs data.seq_len >= {h + 3} (one item of "
                        f"{h + 4} tokens), got {seq_len}")
    return T


def make(difficulty: int, seq_len: int, options: dict) -> Task:
    h, o = difficulty, {k: options.get(k, d) for k, (d, _) in OPTIONS.items()}
    T = validate(h, seq_len, o)
    w = world(o)  # checks option world
    every = items(w, o)
    held = set(w["heldout"].tolist())
    train = every["atomic"] + [every[hh, p] for hh in range(2, h + 1)
                               for p in range(o["people"]) if p not in held]
    val = (every["atomic"][:o["people"]] if h == 1
           else [every[h, p] for p in sorted(held)])  # one item per person, of one length
    train, val = ([np.array(t, np.int32) for t in ts] for ts in (train, val))
    train_lens = np.array([len(t) for t in train])

    def sequence(chosen: list) -> tuple:
        tokens = np.concatenate(chosen)
        is_answer = np.zeros(len(tokens), bool)
        is_answer[1:][tokens[:-1] == EQ] = True  # the token after "=" is the answer
        return lm_form(tokens, is_answer)

    def generate(rng: np.random.Generator, n: int, split: str):
        if split == "train":
            draws = rng.integers(0, len(train), (n, (T + 1) // 5))  # 5: the shortest item
            fits = (np.cumsum(train_lens[draws], 1) <= T + 1).sum(1)  # a prefix: lengths > 0
            rows = [sequence([train[j] for j in d[:m]]) for d, m in zip(draws, fits)]
        elif split == "val":
            rows = [sequence([val[j]]) for j in rng.integers(0, len(val), n)]
        else:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return padded(rows, T)

    return Task(name="facts", difficulty=h, seq_len=T, symbols=symbols_for(o),
                generate=generate,
                description=f"items `subject r_1..r_h = answer ;` of a fixed world packed in "
                            f"{T + 1} tokens; val: {h}-hop "
                            + ("recall of born_in facts" if h == 1
                               else "questions about held-out people"))
