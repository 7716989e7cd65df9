"""SSRL reward (algorithms.md §5.2): the format-score table, EM normalisation, the 0.9/0.1 combination."""

import pytest

from reasonrl.rewards.ssrl import SSRLScorer, exact_match, f1_score, format_score, last_answer, normalize_answer
from reasonrl.tasks.base import Task

ONE_ROUND = ("<think>find it</think><search>who wrote x</search><information>A wrote x.</information>"
             "<think>so A</think><answer>A</answer>")

FORMAT_CASES = [
    # (response, score, why)
    ("<think>easy</think><answer>4</answer>", 0.5, "think-only then answer: min(1/2,1) * 1"),
    (ONE_ROUND, 1.0, "one search round: 2 thinks, 1 search"),
    ("  " + ONE_ROUND + "\n", 1.0, "surrounding whitespace is stripped first"),
    ("<think>a</think><search>q1</search><information>i1</information><think>b</think><search>q2</search>"
     "<information>i2</information><think>c</think><answer>x</answer>", 1.0, "two rounds: 3 thinks, 2 searches"),
    ("<think>a</think><think>b</think><answer>x</answer>", 0.5, "2 thinks, 0 searches: 1 * min(2,1)/max(2,1)"),
    ("<think>a</think><think>b</think><think>c</think><search>q</search><information>i</information>"
     "<answer>x</answer>", 2 / 3, "3 thinks, 1 search: ratio 2/3"),
    ("<think>a</think><search>q</search><information>i</information><answer>x</answer>", 0.5 * 0.5,
     "1 think, 1 search: min(1/2,1) * 1/2"),
    ("".join(f"<think>t{i}</think>" for i in range(9)) + "<answer>x</answer>", 0.0, "more than 8 thinks"),
    ("".join(f"<think>t{i}</think>" for i in range(8)) + "<answer>x</answer>", 1 * 1 / 8, "8 thinks allowed"),
    (ONE_ROUND.replace("<think>so A</think>", "<think>so A</think><b>"), 0.0, "unknown tag"),
    ("text " + ONE_ROUND, 0.0, "does not start with <think>"),
    (ONE_ROUND + " done", 0.0, "does not end with </answer>"),
    ("<think>a</think><answer></answer>", 0.0, "empty answer content"),
    ("<think> </think><answer>x</answer>", 0.0, "whitespace-only content is empty"),
    (ONE_ROUND.replace("who wrote x", "who\nwrote x"), 0.0, "multi-line search query"),
    (ONE_ROUND.replace("A wrote x.", "first\nsecond"), 1.0, "multi-line information is fine"),
    (ONE_ROUND.replace("find it", "your thoughts"), 0.0, "template placeholder"),
    ("<think>a</think><search>q</search><think>b</think><answer>x</answer>", 0.0, "search without information"),
    ("<think>a</think><search>q</search><think>c</think><information>i</information><think>b</think>"
     "<answer>x</answer>", 0.0, "search not immediately followed by information"),
    ("<think>a</think><information>i</information><think>b</think><answer>x</answer>", 0.0, "#search != #information"),
    ("<answer>x</answer><think>a</think>", 0.0, "wrong order"),
    ("<think>a</think>", 0.0, "fewer than 4 tags"),
    ("", 0.0, "empty response"),
]


@pytest.mark.parametrize("text, want, why", FORMAT_CASES, ids=[c[2] for c in FORMAT_CASES])
def test_format_score_table(text, want, why):
    assert format_score(text) == pytest.approx(want), why


def test_normalisation_and_em():
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert normalize_answer("An apple a day") == "apple day"
    assert exact_match("<think>x</think><answer>the Varno.</answer>", "Varno") == 1.0
    assert exact_match("<answer>Lusk</answer> then <answer>Varno</answer>", "Varno") == 1.0  # last one counts
    assert exact_match("<answer>Varno</answer> then <answer>Lusk</answer>", "Varno") == 0.0
    assert exact_match("<answer>multi\nline</answer>", "multi line") == 1.0
    assert exact_match("Varno", "Varno") == 0.0  # no answer tag
    assert exact_match("<answer>Big Apple</answer>", ["New York", "big apple"]) == 1.0
    assert last_answer("<answer>a") is None
    assert f1_score("<answer>new york city</answer>", "New York") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_scorer_combination_and_edge_cases():
    t = Task(uid="k1", prompt="q", answer="A", verifier="exact", meta={"aliases": ["Alpha"]})
    responses = [ONE_ROUND, "<think>hmm</think><answer>Alpha</answer>", "<think>hmm</think><answer>B</answer>",
                 "no tags at all", ""]
    s = SSRLScorer()
    res = s.score([t] * len(responses), responses)
    assert res.scores == pytest.approx([0.9 + 0.1, 0.9 + 0.05, 0.05, 0.0, 0.0])
    assert res.correct == [True, True, False, False, False]
    assert res.counts["no_answer"] == 2 and res.counts["correct"] == 2
    assert s.last_metrics["reward/em_mean"] == pytest.approx(0.4)
    res2 = SSRLScorer(em_weight=1.0, format_weight=0.0).score([t], [ONE_ROUND])
    assert res2.scores == [1.0]
    with pytest.raises(ValueError, match="aliases"):
        s.score([Task(uid="k", prompt="q", answer="A", meta={"aliases": "A"})], ["x"])
    with pytest.raises(ValueError, match="tasks but"):
        s.score([t], [])
