"""The built-in knowledge family: deterministic world, disjoint splits, which facts training can teach,
SSRL-format demonstrations, and a corpus in which real search finds every fact."""

import re

from reasonrl.rewards.ssrl import exact_match, format_score
from reasonrl.rollout.search import SearchTool
from reasonrl.tasks import generate, load_tasks
from reasonrl.tasks.builtin import split_of
from reasonrl.tasks.knowledge import N_PEOPLE, all_questions, corpus, facts_in_training, world


def test_deterministic_and_registered():
    a = generate("knowledge", 30, "train", seed=3)
    b = load_tasks("builtin:knowledge", 30, "train", seed=3)
    assert [(t.uid, t.prompt, t.answer, t.solution) for t in a] == [(t.uid, t.prompt, t.answer, t.solution) for t in b]
    assert [t.uid for t in generate("knowledge", 30, "train", seed=4)] != [t.uid for t in a]  # seed moves the stream
    assert len(world().people) == N_PEOPLE == len(set(world().people))
    assert len(corpus()) == 3 * N_PEOPLE


def test_splits_disjoint_and_stable():
    qs = all_questions()
    train = {q["prompt"] for q in qs if q["split"] == "train"}
    test = {q["prompt"] for q in qs if q["split"] == "test"}
    assert train and test and not train & test and len(train | test) == len(qs)
    tr = generate("knowledge", len(train), "train", unique=True)
    te = generate("knowledge", len(test), "test")
    assert {t.prompt for t in tr} == train and {t.prompt for t in te} == test
    # the split is still a pure function of the (salted) canonical string
    assert all(split_of(c) == s for c, s in _canonicals())


def _canonicals():
    import random

    from reasonrl.tasks.knowledge import make_knowledge

    rng = random.Random(0)
    for _ in range(100):
        p = make_knowledge(rng, 3)
        yield p.canonical, ("train" if any(q["prompt"] == p.prompt and q["split"] == "train" for q in all_questions())
                            else "test")


def test_training_never_mentions_unseen_facts():
    seen = facts_in_training()
    facts_by_id = {f"{f.subject}:{f.relation}": f for f in world().facts.values()}
    for t in generate("knowledge", 300, "train"):
        assert all(facts_by_id[i].memorised and facts_by_id[i] in seen for i in t.meta["fact_ids"])
        assert not t.meta["needs_corpus"]
    taught = "".join(q["solution"] for q in all_questions() if q["split"] == "train")
    te = generate("knowledge", 150, "test")
    assert {t.meta["needs_corpus"] for t in te} == {True, False}
    for t in te:
        docs_taught = [facts_by_id[i].document in taught for i in t.meta["fact_ids"]]
        assert all(docs_taught) == (not t.meta["needs_corpus"])


def test_demonstrations_are_ssrl_format_and_real_search_finds_each_fact():
    tool = SearchTool.from_corpus("builtin:knowledge", top_k=1)
    for t in generate("knowledge", 40, "train") + generate("knowledge", 40, "test"):
        assert format_score(t.solution) == 1.0 and exact_match(t.solution, t.answer) == 1.0
        queries = re.findall(r"<search>(.*?)</search>", t.solution)
        infos = re.findall(r"<information>(.*?)</information>", t.solution)
        assert len(queries) == t.meta["hops"] == len(infos)
        for q, info in zip(queries, infos):
            assert tool.call(q) == info  # sim-to-real: the engine returns exactly the self-search block
        assert t.solution.endswith(f"<answer>{t.answer}</answer>")
