"""Before/after table of SmolLM2 GRPO runs (configs/smollm2_grpo.yaml), one run directory per seed.

Reads each run's fixed held-out probe (``probe.jsonl``: per problem, greedy correct and the number of
correct samples) and compares every probe point with step 0 on the same problems: greedy by the exact
sign test on problems fixed/broken, sampled accuracy by the paired bootstrap over problems. Pooled over
seeds at the end (each seed has its own held-out problems). Also re-grades the final greedy responses
(``eval_responses.jsonl``) strictly (``\\boxed{}`` only) and reports the share of logged training samples
that end in one box, per quarter of the run, so the lenient numbers are never read alone.

usage: python benchmarks/smollm2/summarize.py RUN_DIR [RUN_DIR ...]
"""

import json
import sys
from pathlib import Path

from reasonrl.eval.metrics import paired_bootstrap, sign_test_p
from reasonrl.eval.probe import read_probe
from reasonrl.rewards import Scorer
from reasonrl.rewards.format import format_reward
from reasonrl.tasks.base import Task


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _strict_after(run: Path) -> tuple[float, float, int]:
    """(lenient, strict) greedy accuracy of the final evaluation's saved responses, and their count."""
    rows = _jsonl(run / "eval_responses.jsonl")
    if not rows:
        return float("nan"), float("nan"), 0
    tasks = [Task(uid=str(i), prompt=r.get("prompt", ""), answer=str(r["answer"]), verifier="math") for i, r in enumerate(rows)]
    resp = [r["response"] for r in rows]
    acc = [sum(Scorer(extract=m).score(tasks, resp).correct) / len(rows) for m in ("lenient", "boxed")]
    return acc[0], acc[1], len(rows)


def main(dirs: list[str]) -> None:
    print("| run | probe step | n | greedy | sampled | pass@k | no answer (sampled) | greedy fixed/broke vs step 0 (sign p) "
          "| sampled diff vs step 0 [95 % CI] (bootstrap p) |")
    print("|---|---|---|---|---|---|---|---|---|")
    pooled = {"fixed": 0, "broke": 0, "first": [], "last": []}
    extra = []
    for d in dirs:
        run = Path(d)
        rows = [r for r in read_probe(run / "probe.jsonl") if r["set"] == "heldout"]
        metrics = _jsonl(run / "metrics.jsonl")
        agg = {m["step"]: m for m in metrics if "probe/heldout/greedy" in m}
        base = rows[0]
        m = base["samples"]
        for r in rows:
            n = len(r["greedy"])
            fixed = sum(b and not a for a, b in zip(base["greedy"], r["greedy"]))
            broke = sum(a and not b for a, b in zip(base["greedy"], r["greedy"]))
            bs = paired_bootstrap([c / m for c in base["sampled"]], [c / m for c in r["sampled"]])
            a = agg.get(r["step"], {})
            print(f"| {run.name} | {r['step']} | {n} | {sum(r['greedy']) / n:.3f} | {sum(r['sampled']) / (n * m):.3f} | "
                  f"{a.get(f'probe/heldout/pass@{m}', float('nan')):.3f} | {a.get('probe/heldout/no_answer_sampled', float('nan')):.3f} | "
                  f"{fixed}/{broke} ({sign_test_p(fixed, broke):.2g}) | {bs['diff']:+.3f} [{bs['ci_low']:+.3f}, "
                  f"{bs['ci_high']:+.3f}] ({bs['p']:.2g}) |")
        last = rows[-1]
        pooled["fixed"] += sum(b and not a for a, b in zip(base["greedy"], last["greedy"]))
        pooled["broke"] += sum(a and not b for a, b in zip(base["greedy"], last["greedy"]))
        pooled["first"] += [c / m for c in base["sampled"]]
        pooled["last"] += [c / m for c in last["sampled"]]
        samples = _jsonl(run / "samples.jsonl")
        steps = sorted({s["step"] for s in samples})
        quarters = []
        for q in range(4):
            part = [s for s in samples if steps and steps[0] + q * len(steps) / 4 <= s["step"] < steps[0] + (q + 1) * len(steps) / 4]
            quarters.append(sum(format_reward(s["response"]) for s in part) / len(part) if part else float("nan"))
        extra.append((run.name, *_strict_after(run), quarters))
    if len(dirs) > 1:
        bs = paired_bootstrap(pooled["first"], pooled["last"])
        print(f"\npooled over {len(dirs)} runs, last probe vs step 0: greedy {pooled['fixed']} fixed / {pooled['broke']} broke "
              f"(sign p = {sign_test_p(pooled['fixed'], pooled['broke']):.2g}); sampled {bs['diff']:+.3f} "
              f"[{bs['ci_low']:+.3f}, {bs['ci_high']:+.3f}] (bootstrap p = {bs['p']:.2g})")
    print("\n| run | final greedy, lenient | final greedy, strict \\boxed{} | n | training samples ending in one box, by quarter of the run |")
    print("|---|---|---|---|---|")
    for name, len_acc, strict_acc, n, q in extra:
        print(f"| {name} | {len_acc:.3f} | {strict_acc:.3f} | {n} | {' / '.join(f'{x:.2f}' for x in q)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
