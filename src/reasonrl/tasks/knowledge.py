"""Built-in ``knowledge`` family: a synthetic world, its document corpus, and QA over it (SSRL).

Why a synthetic world: SSRL (algorithms.md §5) asks whether a policy can search its *own* knowledge
and then profit from a real engine at test time. That needs facts the model provably knows, facts it
provably does not know, and a corpus where every fact can be looked up; a fixed generated world gives
all three without downloads.

The world (fixed, independent of any run seed): ``N_PEOPLE`` people, each with a birth city, a job and
a mentor (another person). Every fact is one corpus document, e.g. ``"Tavik was born in Varno."``.
A stable hash marks ``MEMORISED_FRAC`` of the facts *memorised*: only those ever appear in training
questions and their demonstrations, so a model SFT-ed on this family's training stream knows them and
has never seen the rest (*corpus-only* facts, reachable only through a real search engine).

Questions: single hop (``Where was Tavik born?``) and two hops (``Where was the mentor of Tavik
born?``). A question needing any corpus-only fact is a test question; of the rest, a stable
``HELDOUT_FRAC`` share is test too, chosen so that their facts still appear in other training
questions (``_split_table``). The split stays a pure function of the canonical string
(``builtin.split_of``) because the canonical carries a deterministic salt chosen to land in that split.
So the training stream never mentions a corpus-only fact, and the test split holds held-out questions
whose facts all appear in training demonstrations of *other* questions (self-search can answer them by
recall) plus questions only a real engine can answer. ``Task.meta["needs_corpus"]`` is False exactly
when every fact the question needs appears in some training demonstration.

Demonstrations are SSRL trajectories (think / search / information / answer) whose search queries are
the prefix of the fact's document and whose information block is the document itself, so the same
policy can be run with self-search (it writes the block) or with the real engine (the block is
retrieved; ``reasonrl.rollout.search``).
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass

# The tiny model for this family (``builtin:tiny-knowledge``, SSRL): SFT on every training question but one
# (``val_size`` must be >= 1); no intermediate validation (``eval_every`` above ``sft_steps``), so the final
# SFT weights are kept.
TINY_MODEL_SPEC = {"demos": 199, "val_size": 1, "vocab_size": 384, "sft_steps": 800, "sft_batch": 32,
                   "eval_every": 10**6, "max_new_tokens": 128}

N_PEOPLE = 100
MEMORISED_FRAC = 0.6
HELDOUT_FRAC = 0.4  # share of eligible questions over memorised facts held out for test
WORLD_SEED = 20250814  # fixed: the corpus and the facts a built model knows must not move with run seeds

_CONS = "bdfgklmnprstvz"
_VOWS = "aeiou"
CITIES = ["Varno", "Lusk", "Omber", "Tesca", "Pirin", "Galdo", "Mesk", "Ruvan", "Sollo", "Kedra",
          "Fenwa", "Brill"]
JOBS = ["baker", "pilot", "nurse", "potter", "judge", "farmer", "singer", "tailor", "miner", "sailor"]
RELATIONS = ("born", "job", "mentor")


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str  # one of RELATIONS
    value: str

    @property
    def query(self) -> str:
        """The search query a demonstration issues for this fact (a prefix of its document)."""
        return {"born": f"{self.subject} was born in", "job": f"{self.subject} works as a",
                "mentor": f"the mentor of {self.subject} is"}[self.relation]

    @property
    def document(self) -> str:
        return {"born": f"{self.subject} was born in {self.value}.", "job": f"{self.subject} works as a {self.value}.",
                "mentor": f"The mentor of {self.subject} is {self.value}."}[self.relation]

    @property
    def memorised(self) -> bool:
        h = hashlib.md5(f"fact|{self.subject}|{self.relation}".encode()).digest()
        return int.from_bytes(h[:4], "big") / 2**32 < MEMORISED_FRAC


@dataclass(frozen=True)
class World:
    people: tuple[str, ...]
    facts: dict  # (subject, relation) -> Fact

    def fact(self, subject: str, relation: str) -> Fact:
        return self.facts[(subject, relation)]

    def corpus(self) -> list[dict]:
        """One document per fact: ``{"id", "text", "memorised"}``, in a fixed order."""
        return [{"id": f"{f.subject}:{f.relation}", "text": f.document, "memorised": f.memorised}
                for f in self.facts.values()]


def _name(rng: random.Random) -> str:
    return (rng.choice(_CONS).upper() + rng.choice(_VOWS) + rng.choice(_CONS) + rng.choice(_VOWS)
            + rng.choice(_CONS))


@functools.lru_cache(maxsize=1)
def world() -> World:
    rng = random.Random(WORLD_SEED)
    taken = set(CITIES)
    people: list[str] = []
    while len(people) < N_PEOPLE:
        n = _name(rng)
        if n not in taken:
            taken.add(n)
            people.append(n)
    facts = {}
    for i, p in enumerate(people):
        facts[(p, "born")] = Fact(p, "born", rng.choice(CITIES))
        facts[(p, "job")] = Fact(p, "job", rng.choice(JOBS))
        # mentor: a different person (a derangement-like draw keeps chains two hops long)
        facts[(p, "mentor")] = Fact(p, "mentor", people[(i + 1 + rng.randrange(N_PEOPLE - 1)) % N_PEOPLE])
    return World(tuple(people), facts)


def corpus() -> list[dict]:
    return world().corpus()


_QUESTION = {"born": "Where was {} born?", "job": "What is the job of {}?", "mentor": "Who is the mentor of {}?"}
_THINK_FIRST = {"born": "find the birthplace", "job": "find the job", "mentor": "find the mentor"}


def _round(fact: Fact, think: str) -> str:
    return f"<think>{think}</think><search>{fact.query}</search><information>{fact.document}</information>"


def _salted(canonical: str, split: str) -> str:
    """A canonical string for ``canonical`` that ``split_of`` puts in ``split`` (deterministic salt)."""
    from reasonrl.tasks.builtin import split_of

    for salt in range(10_000):
        c = f"{canonical}|{salt}"
        if split_of(c) == split:
            return c
    raise AssertionError(f"unreachable: md5 never hit the {split} bucket in 10,000 salts")


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "big") / 2**32


@functools.lru_cache(maxsize=1)
def _split_table() -> dict[str, str]:
    """prompt -> split. Questions needing a non-memorised fact are test. Of the rest, a stable share of
    two-hop questions is held out (their facts stay taught by single-hop training questions), then a
    stable share of single-hop questions whose fact also appears in a training two-hop question (so
    the fact is still taught, in another context)."""
    w = world()
    table: dict[str, str] = {}
    two_hop_train_facts: set[Fact] = set()
    for p in w.people:
        for r in ("born", "job"):
            q = _question(p, r, 2)
            if not all(f.memorised for f in q["facts"]):
                table[q["prompt"]] = "test"
            elif _unit(f"heldout|{q['prompt']}") < HELDOUT_FRAC:
                table[q["prompt"]] = "test"
            else:
                table[q["prompt"]] = "train"
                two_hop_train_facts.update(q["facts"])
    for p in w.people:
        for r in RELATIONS:
            q = _question(p, r, 1)
            f = q["facts"][0]
            held = f in two_hop_train_facts and _unit(f"heldout|{q['prompt']}") < HELDOUT_FRAC
            table[q["prompt"]] = "test" if not f.memorised or held else "train"
    return table


@functools.lru_cache(maxsize=1)
def facts_in_training() -> frozenset:
    """Facts that appear in at least one training question's demonstration (what SFT can teach)."""
    return frozenset(f for q in all_questions() if q["split"] == "train" for f in q["facts"])


def question(subject: str, relation: str, hops: int) -> dict:
    """The question record (prompt, answer, solution, facts used, split) for ``relation`` of
    ``subject``, through the mentor when ``hops == 2``."""
    q = _question(subject, relation, hops)
    q["split"] = _split_table()[q["prompt"]]
    return q


def _question(subject: str, relation: str, hops: int) -> dict:
    w = world()
    if hops == 1:
        chain = [w.fact(subject, relation)]
        prompt = _QUESTION[relation].format(subject)
        thinks = [_THINK_FIRST[relation], "so the answer is"]
    else:
        m = w.fact(subject, "mentor")
        chain = [m, w.fact(m.value, relation)]
        prompt = _QUESTION[relation].format(f"the mentor of {subject}")
        thinks = ["find the mentor", f"now {m.value}", "so the answer is"]
    answer = chain[-1].value
    solution = "".join(_round(f, t) for f, t in zip(chain, thinks)) + f"<think>{thinks[-1]}</think><answer>{answer}</answer>"
    return {"prompt": prompt, "answer": answer, "solution": solution, "facts": chain}


def make_knowledge(rng: random.Random, difficulty: int):
    """One question: ``difficulty`` 1 = single hop only, 2 = two hops only, 3 = either (half each)."""
    from reasonrl.tasks.builtin import _Problem

    w = world()
    hops = difficulty if difficulty in (1, 2) else rng.choice((1, 2))
    subject = rng.choice(w.people)
    relation = rng.choice(RELATIONS if hops == 1 else ("born", "job"))
    q = question(subject, relation, hops)
    canonical = _salted(f"knowledge|{q['prompt']}", q["split"])
    seen = facts_in_training()
    extra = {"hops": hops, "needs_corpus": not all(f in seen for f in q["facts"]), "aliases": [],
             "fact_ids": [f"{f.subject}:{f.relation}" for f in q["facts"]]}
    return _Problem(canonical, q["prompt"], q["answer"], q["solution"], "exact", extra)


def all_questions() -> list[dict]:
    """Every question the family can produce (for sizing and tests)."""
    w = world()
    out = []
    for p in w.people:
        out += [question(p, r, 1) for r in RELATIONS]
        out += [question(p, r, 2) for r in ("born", "job")]
    return out
