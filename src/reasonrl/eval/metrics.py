"""Evaluation metrics over sampled responses: pass@k, maj@k, diversity, and uncertainty.

Pure Python on lists of per-problem samples so that benchmark runners, the trainer's eval hook and
offline reports compute the same numbers. No model code, no numpy/torch dependency.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "pass_at_k",
    "mean_pass_at_k",
    "maj_at_k",
    "distinct_correct",
    "binomial_stderr",
    "wilson_interval",
    "mean_ci",
    "sign_test_p",
    "paired_comparison",
    "paired_bootstrap",
]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    Estimates 1 - C(n-c, k) / C(n, k). Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) because the
    binomials overflow floats for realistic n (e.g. n=200) while the product stays in [0, 1].
    Sampling n > k responses and using this estimator has far lower variance than drawing exactly
    k samples and checking whether any is correct.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}; pass@k is undefined")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """Mean pass@k over problems; ``correct[p]`` holds the verdict of each sample of problem p.

    Problems may have different sample counts; each must have at least ``k``.
    """
    if len(correct) == 0:
        raise ValueError("mean_pass_at_k needs at least one problem")
    total = 0.0
    for p, row in enumerate(correct):
        if len(row) < k:
            raise ValueError(f"problem {p} has {len(row)} samples, fewer than k={k}")
        total += pass_at_k(len(row), sum(bool(x) for x in row), k)
    return total / len(correct)


def maj_at_k(
    answers: Sequence[Sequence[str | None]],
    gold_correct: Sequence[Sequence[bool]],
    k: int,
) -> float:
    """Majority-vote accuracy (maj@k) over the first ``k`` samples of each problem, averaged.

    ``answers[p][i]`` is the extracted final answer of sample i (``None`` when extraction failed;
    such samples do not vote) and ``gold_correct[p][i]`` its verdict against the reference.
    The most frequent answer wins; ties go to the answer that occurs first among the first k
    samples, so the result is deterministic and does not depend on hash order. The problem
    counts as solved only if every one of the voted answer's samples is marked correct (they
    normally agree; when a verifier disagrees with itself we count the vote as wrong rather than
    guess). A problem where no sample produced an answer counts as unsolved.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(answers) != len(gold_correct):
        raise ValueError(f"{len(answers)} answer rows but {len(gold_correct)} verdict rows")
    if len(answers) == 0:
        raise ValueError("maj_at_k needs at least one problem")
    solved = 0
    for p, (ans_row, ok_row) in enumerate(zip(answers, gold_correct)):
        if len(ans_row) != len(ok_row):
            raise ValueError(f"problem {p}: {len(ans_row)} answers but {len(ok_row)} verdicts")
        if len(ans_row) < k:
            raise ValueError(f"problem {p} has {len(ans_row)} samples, fewer than k={k}")
        votes = Counter(a for a in ans_row[:k] if a is not None)
        if not votes:
            continue
        # Counter preserves insertion order and max() returns the first maximal item, so ties
        # resolve to the earliest-occurring answer.
        winner = max(votes, key=votes.__getitem__)
        if all(bool(ok_row[i]) for i in range(k) if ans_row[i] == winner):
            solved += 1
    return solved / len(answers)


def distinct_correct(
    responses: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]]
) -> float:
    """Mean number of distinct correct responses per problem (a diversity signal).

    RL on verifiable rewards tends to collapse onto one solution path while pass@1 rises; this
    counts how many textually different correct responses survive. Whitespace runs are collapsed
    and ends stripped before comparing, so formatting noise is not counted as diversity.
    """
    if len(responses) != len(correct):
        raise ValueError(f"{len(responses)} response rows but {len(correct)} verdict rows")
    if len(responses) == 0:
        raise ValueError("distinct_correct needs at least one problem")
    total = 0
    for p, (resp_row, ok_row) in enumerate(zip(responses, correct)):
        if len(resp_row) != len(ok_row):
            raise ValueError(f"problem {p}: {len(resp_row)} responses but {len(ok_row)} verdicts")
        total += len({" ".join(r.split()) for r, ok in zip(resp_row, ok_row) if ok})
    return total / len(responses)


def binomial_stderr(p: float, n: int) -> float:
    """Standard error sqrt(p(1-p)/n) of a proportion ``p`` measured on ``n`` trials."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / n)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for ``successes`` out of ``n``.

    Preferred over the normal (Wald) interval for accuracies because eval sets are small and
    accuracies sit near 0 or 1, where Wald collapses to zero width or leaves [0, 1].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and normal-approximation half-width ``z * s / sqrt(n)`` (s: sample std, ddof=1).

    No Student-t correction: callers aggregate over tens to hundreds of problems or seeds where
    the difference is negligible, and avoiding scipy keeps this module dependency-free. With a
    single value the spread is unknown, so the half-width is ``nan`` (not 0, which would claim
    certainty).
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, z * math.sqrt(var / n)


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test (McNemar without the normal approximation) on discordant pairs.

    For paired evaluations on the same problems: ``wins`` = problems only the second model solves,
    ``losses`` = problems only the first solves. Returns 1.0 when there are no discordant pairs.
    """
    if wins < 0 or losses < 0:
        raise ValueError("wins and losses must be non-negative")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_comparison(first: Sequence[bool], second: Sequence[bool], prefix: str) -> dict[str, float]:
    """Problems ``second`` fixes and breaks relative to ``first`` and the sign-test p-value."""
    if len(first) != len(second):
        raise ValueError(f"paired comparison needs equal lengths, got {len(first)} and {len(second)}")
    fixed = sum(1 for a, b in zip(first, second) if b and not a)
    broke = sum(1 for a, b in zip(first, second) if a and not b)
    return {f"{prefix}_fixed": fixed, f"{prefix}_broke": broke, f"{prefix}_sign_p": sign_test_p(fixed, broke)}


def paired_bootstrap(first: Sequence[float], second: Sequence[float], n_boot: int = 10_000,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over problems of the mean difference ``second - first`` (per-problem scores, e.g.
    greedy 0/1 or the fraction of correct samples).

    Resamples problems with replacement, keeping each problem's pair together, so the between-problem
    spread (most of the variance on a fixed probe) cancels. Returns the difference, its 95 % percentile
    interval and a two-sided p-value (twice the smaller fraction of resampled differences on either side
    of 0, at least 1/n_boot)."""
    import random

    if len(first) != len(second):
        raise ValueError(f"paired bootstrap needs equal lengths, got {len(first)} and {len(second)}")
    n = len(first)
    if n == 0:
        raise ValueError("paired bootstrap needs at least one problem")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = [float(b) - float(a) for a, b in zip(first, second)]
    rng = random.Random(seed)
    means = sorted(math.fsum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    below = sum(m <= 0 for m in means) / n_boot
    above = sum(m >= 0 for m in means) / n_boot
    return {"diff": math.fsum(d) / n, "ci_low": means[int(0.025 * (n_boot - 1))],
            "ci_high": means[int(0.975 * (n_boot - 1))], "p": min(1.0, max(2 * min(below, above), 1 / n_boot))}
