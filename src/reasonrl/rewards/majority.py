"""TTRL: label-free rewards from a majority vote over the policy's own answers (arXiv 2504.16084).

Per prompt (spec algorithms.md §4): sample ``n_votes`` responses, extract and normalise each answer,
take the most frequent normalised string as the pseudo-label, reward each response 1 if its answer is
*equivalent* to the label (math equivalence via the shared verifier), and train on the first
``n_train`` (= ``rollout.n``) of the votes with rewards computed from the full vote. The vote uses exact
strings after normalisation and the reward uses equivalence, as in the official code.

Decisions the spec leaves open, fixed here (docs/ttrl.md):

- an answer that extracts to nothing (``None`` or empty after normalisation) never votes; a prompt with
  no valid answer has no label and every response gets reward 0;
- ties go to the answer that occurs first among the votes (``Counter.most_common`` order; the same rule
  as ``eval.metrics.maj_at_k``), so the label never depends on hash order;
- the rows kept for the update are the first ``n_train`` of each group: rollouts are i.i.d., so this is a
  uniform random subset, and keeping a prefix is what the official ``_select_top_k_per_prompt`` does.

Gold answers never reach the training path: :meth:`MajorityVoteReward.hide_labels` blanks ``answer`` and
``solution`` on the tasks the trainer sees and keeps the originals privately, read only by the metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from reasonrl.rewards.extract import extract_answer
from reasonrl.rewards.format import format_reward
from reasonrl.rewards.math_verify_worker import Verdict
from reasonrl.rewards.math_verify_worker import _normalize as _strip_delimiters

__all__ = ["VOTABLE_VERIFIERS", "LABELLED_RECIPES", "check_ttrl_config", "normalize_vote", "majority_label",
           "vote_rewards", "GroupVote", "vote_group", "prompt_metrics", "mean_metrics", "keep_first", "MajorityVoteReward"]

VOTABLE_VERIFIERS = ("math", "exact")  # countdown / reasoning_gym answers have no single canonical form to vote on
LABELLED_RECIPES = ("sft", "hpt")  # recipes that train on demonstrations: labels by another name


def check_ttrl_config(cfg) -> None:
    """Load-time checks of a config with ``ttrl.enabled`` (raises ValueError naming the field and the fix)."""
    if cfg.ttrl.n_votes < cfg.rollout.n:
        raise ValueError(f"ttrl.n_votes={cfg.ttrl.n_votes} is smaller than rollout.n={cfg.rollout.n}, the votes kept "
                         f"for the update (N_train <= N_vote); raise ttrl.n_votes or lower rollout.n")
    if cfg.reward.functions:
        raise ValueError("reward.functions is not allowed with ttrl.enabled: user reward functions receive the gold "
                         "answer, which TTRL must not see; remove them or set ttrl.enabled=false")
    if cfg.algorithm.get("name") in LABELLED_RECIPES:
        raise ValueError(f"algorithm.name={cfg.algorithm['name']} trains on demonstrations, which TTRL hides; pick a "
                         f"recipe without demonstrations (e.g. grpo) or set ttrl.enabled=false")


def normalize_vote(answer: str | None) -> str | None:
    """The string an answer votes with, or ``None`` if it cannot vote.

    The verifier's own normalisation (``$``/``\\(`` delimiters, ``\\mathrm{e}``) plus the spec's light
    clean-up: newlines removed, runs of spaces collapsed, a leading ``:`` and trailing ``.`` or ``/`` dropped.
    Deliberately not numeric canonicalisation: ``5`` and ``5.0`` are different votes (exact strings, as the
    spec), though each is *rewarded* as equivalent to the other's label by the math verifier.
    """
    if answer is None:
        return None
    s = " ".join(answer.replace("\n", " ").split())
    s = _strip_delimiters(s)
    s = s.lstrip(":").rstrip("./").strip()
    return s or None


def majority_label(keys: Sequence[str | None]) -> tuple[str | None, int]:
    """``(label, count)``: the most frequent non-``None`` key, ties to the earliest; ``(None, 0)`` if none votes."""
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return None, 0
    return votes.most_common(1)[0]  # most_common keeps insertion order among equal counts


def vote_rewards(keys: Sequence[str | None], label: str | None,
                 equivalent: Callable[[str, str], bool]) -> list[float]:
    """1.0 where a key equals the label or ``equivalent(label, key)``; 0.0 for ``None`` keys or no label."""
    if label is None:
        return [0.0] * len(keys)
    return [1.0 if k is not None and (k == label or equivalent(label, k)) else 0.0 for k in keys]


@dataclass
class GroupVote:
    """One prompt's vote: normalised keys, the label and its count, and the pseudo-rewards of all votes."""

    keys: list[str | None]
    label: str | None
    count: int
    rewards: list[float]


def vote_group(answers: Sequence[str | None], equivalent: Callable[[str, str], bool]) -> GroupVote:
    keys = [normalize_vote(a) for a in answers]
    label, count = majority_label(keys)
    return GroupVote(keys, label, count, vote_rewards(keys, label, equivalent))


def prompt_metrics(vote: GroupVote, true_correct: Sequence[bool] | None, label_correct: bool | None,
                   n_train: int) -> dict[str, float]:
    """Spec §4.2 metrics of one prompt (averaged over prompts by the caller).

    Label-free: ``majority_ratio`` (count(label) / N, all N votes in the denominator even when some could not
    vote), ``majority_voting_reward`` (mean pseudo-reward), ``no_label`` (nobody voted). With the hidden gold
    (``true_correct`` per vote, ``label_correct`` for the label): ``label_accuracy``, ``reward_accuracy`` (share
    of votes whose pseudo-reward equals the true reward), ``ground_truth_ratio`` (mean true reward),
    ``pass@N``; and the same on the first ``n_train`` votes, prefixed ``post_``.
    """
    n = len(vote.rewards)
    if n == 0:
        raise ValueError("prompt_metrics needs at least one vote")
    if not 1 <= n_train <= n:
        raise ValueError(f"n_train={n_train} must lie in [1, {n}] (the number of votes)")
    out = {"majority_ratio": vote.count / n, "majority_voting_reward": sum(vote.rewards) / n,
           "no_label": float(vote.label is None),
           "post_majority_voting_reward": sum(vote.rewards[:n_train]) / n_train}
    if true_correct is None:
        return out
    if len(true_correct) != n:
        raise ValueError(f"{len(true_correct)} gold verdicts for {n} votes")
    true = [1.0 if c else 0.0 for c in true_correct]
    for prefix, m in (("", n), ("post_", n_train)):
        out[f"{prefix}reward_accuracy"] = sum(p == t for p, t in zip(vote.rewards[:m], true[:m])) / m
        out[f"{prefix}ground_truth_ratio"] = sum(true[:m]) / m
        out[f"{prefix}pass@{m}"] = float(any(true[:m]))
    out["label_accuracy"] = float(bool(label_correct))
    return out


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over prompts (a key missing from a prompt, e.g. gold metrics without gold, is skipped)."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: math.fsum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}


def keep_first(group_ids: Sequence[int], n_train: int) -> list[int]:
    """Row indices of the first ``n_train`` rows of every group (rows of a group need not be contiguous)."""
    seen: Counter = Counter()
    keep = []
    for i, g in enumerate(group_ids):
        if seen[g] < n_train:
            keep.append(i)
        seen[g] += 1
    return keep


class MajorityVoteReward:
    """The trainer's TTRL stage: blinds tasks, turns ``n_votes`` rollouts per prompt into majority-vote
    rewards, keeps ``n_train`` of them, and accumulates the §4.2 metrics until :meth:`pop_metrics`.

    ``scorer`` is the run's :class:`~reasonrl.rewards.Scorer`: its math verifier grades equivalence to the
    pseudo-label, and (metrics only) grades votes against the hidden gold answers.
    """

    def __init__(self, scorer, n_votes: int, n_train: int, correctness_weight: float = 1.0,
                 format_weight: float = 0.0):
        if not 1 <= n_train <= n_votes:
            raise ValueError(f"n_train={n_train} must lie in [1, n_votes={n_votes}]")
        self.scorer = scorer
        self.n_votes, self.n_train = n_votes, n_train
        self.cw, self.fw = float(correctness_weight), float(format_weight)
        self._gold: dict[tuple[str, str], object] = {}
        self._rows: list[dict[str, float]] = []
        self._grading_errors = 0
        self._comparisons = 0

    @classmethod
    def from_config(cls, cfg, scorer) -> "MajorityVoteReward":
        return cls(scorer, cfg.ttrl.n_votes, cfg.rollout.n, cfg.reward.correctness, cfg.reward.format)

    # ------------------------------------------------------------------ labels stay out of training
    def hide_labels(self, tasks: Sequence) -> list:
        """Copies of ``tasks`` with ``answer`` and ``solution`` blanked; the originals are kept for metrics."""
        out = []
        for t in tasks:
            if t.verifier not in VOTABLE_VERIFIERS:
                raise ValueError(f"TTRL cannot vote on task {t.uid!r}: its verifier {t.verifier!r} has no single "
                                 f"canonical answer; use prompts graded by {' or '.join(VOTABLE_VERIFIERS)}")
            self._gold[(t.uid, t.prompt)] = t
            out.append(replace(t, answer="", solution=None))
        return out

    def _equivalent(self, verifier: str) -> Callable[[str, str], bool]:
        if verifier == "exact":
            return lambda a, b: a.strip() == b.strip()

        def math_eq(label: str, key: str) -> bool:
            v = self.scorer.verifier.verify(label, key)
            self._comparisons += 1
            # a pseudo-label that does not parse is the policy's answer, not an infrastructure fault: no reward
            self._grading_errors += v in (Verdict.ERROR, Verdict.TIMEOUT)
            return v is Verdict.CORRECT
        return math_eq

    # ------------------------------------------------------------------ scoring
    def score(self, tasks: Sequence, ro):
        """Majority-vote rewards for ``ro`` (``n_votes`` rows per group; ``tasks[i]`` is row i's blinded task).

        Returns the rollouts reduced to the first ``n_train`` rows of each group and a
        :class:`~reasonrl.rewards.RewardResult` aligned with them (``correct`` = agrees with the label).
        """
        from reasonrl.rewards.result import RewardResult

        if len(tasks) != len(ro):
            raise ValueError(f"{len(tasks)} tasks for {len(ro)} rollouts")
        texts = list(ro.response_text)
        extracted = [extract_answer(r) for r in texts]
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(ro.group_ids.tolist()):
            groups.setdefault(int(g), []).append(i)
        pseudo = [0.0] * len(ro)
        for g, rows in groups.items():
            if len(rows) != self.n_votes:
                raise ValueError(f"group {g} has {len(rows)} rollouts, expected ttrl.n_votes={self.n_votes}")
            task = tasks[rows[0]]
            vote = vote_group([extracted[i] for i in rows], self._equivalent(task.verifier))
            for i, r in zip(rows, vote.rewards):
                pseudo[i] = r
            true, label_ok = self._gold_verdicts(task, [texts[i] for i in rows], vote.label)
            self._rows.append(prompt_metrics(vote, true, label_ok, self.n_train))
        keep = keep_first(ro.group_ids.tolist(), self.n_train)
        fmt = [format_reward(texts[i]) for i in keep]
        corr = [pseudo[i] for i in keep]
        res = RewardResult(
            scores=[self.cw * c + self.fw * f for c, f in zip(corr, fmt)], correct=[c > 0 for c in corr],
            components={"correctness": corr, "format": fmt},
            counts={"correct": sum(c > 0 for c in corr), "wrong": sum(c == 0 for c in corr), "timeout": 0, "error": 0,
                    "no_answer": sum(extracted[i] is None for i in keep)},
            extracted=[extracted[i] for i in keep], verdicts=["correct" if c > 0 else "wrong" for c in corr],
            valid=[True] * len(keep))
        return ro.select(keep), res

    def _gold_verdicts(self, task, texts: list[str], label: str | None) -> tuple[list[bool] | None, bool | None]:
        """Metrics only: each vote and the label graded against the hidden gold (None when there is none)."""
        gold = self._gold.get((task.uid, task.prompt))
        if gold is None or not str(gold.answer).strip():
            return None, None
        res = self.scorer.score([gold] * len(texts), texts)
        if label is None:
            ok = False
        elif gold.verifier == "exact":
            ok = label.strip() == gold.answer.strip()
        else:
            ok = self.scorer.verifier.verify(gold.answer, label) is Verdict.CORRECT
        return list(res.correct), ok

    def pop_metrics(self) -> dict[str, float]:
        """Means over the prompts scored since the last call, as ``ttrl/<name>``; resets the accumulator and
        forgets the gold answers of the tasks blinded so far (call once per trainer step)."""
        out = {f"ttrl/{k}": v for k, v in mean_metrics(self._rows).items()}
        if self._comparisons:
            out["ttrl/label_grading_errors"] = self._grading_errors / self._comparisons
        self._rows, self._grading_errors, self._comparisons = [], 0, 0
        self._gold.clear()  # the trainer blinds each step's tasks afresh; keeps memory flat on long streams
        return out
