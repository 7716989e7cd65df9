"""Writes benchmarks/smollm2/arith1.jsonl: one-operation built-in arith problems without the left-to-right rule.

The built-in arith family attaches ``meta["instruction"]`` (evaluate strictly left to right, "2+3*4 = 20")
to every prompt, and the boxed/chat templates append it. For one operation the rule changes nothing, but it
derails SmolLM2-135M-Instruct: it starts applying "2+3*4 = 20" to ``75-70`` (0/32 held-out greedy
correct even under lenient grading, 3.9 % of samples; benchmarks/smollm2/README.md). The same problems
without it, as a task file: the train and test splits of the built-in generator (disjoint by its hash
split), prompt and answer only.

usage: python benchmarks/smollm2/make_data.py [OUT]   (deterministic: rerunning writes the same file)
"""

import json
import sys
from pathlib import Path

from reasonrl.tasks.builtin import generate

N = {"train": 512, "test": 128}


def main(out: str = str(Path(__file__).with_name("arith1.jsonl"))) -> None:
    rows = []
    for split, n in N.items():
        for t in generate("arith", n, split=split, seed=0, difficulty=1, unique=True):
            rows.append({"uid": t.uid, "prompt": t.prompt, "answer": t.answer, "verifier": "math", "split": split})
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
