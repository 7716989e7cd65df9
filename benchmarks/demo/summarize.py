"""Table of `reasonrl demo` runs (one per seed) with per-seed and pooled paired tests.

usage: python benchmarks/demo/summarize.py RUN_DIR [RUN_DIR ...]
"""

import json
import sys
from pathlib import Path

from reasonrl.eval.metrics import sign_test_p


def main(dirs: list[str]) -> None:
    rows = [(Path(d).name, json.loads((Path(d) / "summary.json").read_text())) for d in dirs]
    print("| run | before | after RL | SFT control | RL - before | RL - control | fixed/broke vs start (p) "
          "| won/lost vs control (p) | RL steps | control steps | probe sampled before / after / control |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tot = {"bf": 0, "bb": 0, "cf": 0, "cb": 0}
    gains, margins = [], []
    for name, s in rows:
        b, a, c = s["pass@1_before"], s["pass@1_after"], s.get("pass@1_sft_control", float("nan"))
        gains.append(a - b)
        margins.append(a - c)
        tot["bf"] += s["after_vs_before_fixed"]
        tot["bb"] += s["after_vs_before_broke"]
        tot["cf"] += s.get("after_vs_control_fixed", 0)
        tot["cb"] += s.get("after_vs_control_broke", 0)
        probe = " / ".join(f"{s[k]:.3f}" for k in ("probe_heldout_sampled_before", "probe_heldout_sampled_after",
                                                 "probe_heldout_sampled_control") if k in s)
        print(f"| {name} | {b:.3f} | {a:.3f} | {c:.3f} | {a - b:+.3f} | {a - c:+.3f} | "
              f"{s['after_vs_before_fixed']}/{s['after_vs_before_broke']} ({s['after_vs_before_sign_p']:.2g}) | "
              f"{s.get('after_vs_control_fixed')}/{s.get('after_vs_control_broke')} "
              f"({s.get('after_vs_control_sign_p', float('nan')):.2g}) | {s['steps']} | "
              f"{s.get('control/control_steps')} | {probe} |")
    n = len(rows)
    print(f"\nmean RL - before {sum(gains) / n:+.3f}, mean RL - control {sum(margins) / n:+.3f} over {n} runs; pooled "
          f"sign tests: vs start {tot['bf']} fixed / {tot['bb']} broke, p = {sign_test_p(tot['bf'], tot['bb']):.2g}; "
          f"vs control {tot['cf']} won / {tot['cb']} lost, p = {sign_test_p(tot['cf'], tot['cb']):.2g}")


if __name__ == "__main__":
    main(sys.argv[1:])
