"""Writes benchmarks/smollm2/arith1.jsonl: small one-operation problems SmolLM2-135M-Instruct can sometimes solve.

Two things about the built-in arith family (``builtin:arith``) leave this model without a learning signal:

- every prompt carries ``meta["instruction"]`` (evaluate strictly left to right, "2+3*4 = 20"), which the
  boxed/chat templates append; for one operation the rule changes nothing, but the model starts applying
  "2+3*4 = 20" to ``75-70`` (0/32 held-out greedy correct even under lenient grading, 3.9 % of samples);
- without it, two-digit operands (1..99) are still too hard: 1/32 greedy, 4.7 % of samples, so most
  GRPO groups have zero variance (benchmarks/smollm2/README.md).

So: ``a+b`` and ``a-b`` with operands 1..20 (``a >= b``), and ``a*b`` with operands 2..9, each problem
once, as ``Compute a+b.`` with no instruction; the split is the built-in suite's stable hash split of the
canonical string (``tasks.builtin.split_of``), so train and test are disjoint.

usage: python benchmarks/smollm2/make_data.py [OUT]   (deterministic: rerunning writes the same file)
"""

import json
import random
import sys
from pathlib import Path

from reasonrl.tasks.builtin import split_of


def problems() -> list[tuple[str, int]]:
    out = [(f"{a}+{b}", a + b) for a in range(1, 21) for b in range(1, 21)]
    out += [(f"{a}-{b}", a - b) for a in range(1, 21) for b in range(1, a + 1)]
    out += [(f"{a}*{b}", a * b) for a in range(2, 10) for b in range(2, 10)]
    random.Random(0).shuffle(out)  # the trainer reads a task file in order: mix the operations
    return out


def main(out: str = str(Path(__file__).with_name("arith1.jsonl"))) -> None:
    rows = [{"uid": f"small-{expr}", "prompt": f"Compute {expr}.", "answer": str(v), "verifier": "math",
             "split": split_of(f"arith:{expr}")} for expr, v in problems()]
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    n_test = sum(r["split"] == "test" for r in rows)
    print(f"wrote {len(rows)} rows ({len(rows) - n_test} train, {n_test} test) to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
