import json
from pathlib import Path

import pytest

from reasonrl.trainer.logging import RunLogger


def write_run(d: Path, steps: range, samples: list[dict] | None = None, summary: dict | None = None) -> Path:
    """A run directory in the trainer's own format (metrics through RunLogger)."""
    d.mkdir(parents=True, exist_ok=True)
    log = RunLogger(d, tensorboard=False)
    for s in steps:
        log.log({"step": s, "reward/mean": 0.1 * s, "response/length_mean": 40.0 + s, "actor/lr": 1e-4})
    log.close()
    with (d / "samples.jsonl").open("a") as f:
        for row in samples or []:
            f.write(json.dumps(row) + "\n")
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def sample(step, uid, response, reward, **kw):
    return {"step": step, "uid": uid, "prompt": f"Compute {uid}.", "answer": "7", "response": response,
            "reward": reward, "correct": reward > 0, **kw}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    alpha = []
    for s in range(1, 6):
        pieces = ["step", f" {s}", " answer", f" {'zebra-42' if s == 3 else s}"]
        alpha.append(sample(s, f"a{s}", "".join(pieces), float(s % 2), advantage=0.5,
                            tokens=[[p, -0.5 * i, 0.3 * i] for i, p in enumerate(pieces)]))
    write_run(root / "alpha", range(1, 6), alpha,
              summary={"pass@1_before": 0.4, "pass@1_after": 0.55})
    write_run(root / "beta", range(1, 3), [sample(1, "b1", "<script>alert(1)</script>", 0.0)])
    (root / "not-a-run").mkdir()
    return root
