"""``reasonrl demo vla``: a one-demo VLA start on FetchReach, a few GRPO steps through the normal trainer, and
``report.html`` with held-out success before and after plus the episode strips (PNG + GIF) of both policies.

Small, fast defaults (``DEMO_OVERRIDES``, a few minutes on two CPU cores) on top of ``configs/vla_fetch.yaml``;
any ``section.field=value`` given on the command line wins. A top-level module (not in ``reasonrl.embodied``):
it drives the trainer, and the trainer's config already imports the embodied package. The full measurement (3 seeds, imitation controls,
intervals) is ``reasonrl bench vla`` (``benchmarks/vla/``).
"""

from __future__ import annotations

from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vla_fetch.yaml"
DEMO_OVERRIDES = [
    "run.name=vla_demo", "trainer.steps=8", "trainer.save_every=0", "trainer.eval_every=0",
    "embodied.eval.states_per_task=64", "embodied.eval.strip_episodes=4",
]


def run_vla_demo(overrides: list[str] = (), config: str | Path | None = None, log=print) -> dict:
    """Train with ``DEMO_OVERRIDES`` + ``overrides``, write the report, print before/after; returns the summary."""
    from reasonrl.config import load_config
    from reasonrl.report import build_report
    from reasonrl.trainer.loop import Trainer
    from reasonrl.trainer.rundir import RunDir

    path = Path(config) if config else CONFIG
    if not path.is_file():
        raise SystemExit(f"reasonrl demo vla needs {path} (configs/vla_fetch.yaml of a source checkout); "
                         "run it from the repository or pass the config: run_vla_demo(config=PATH)")
    cfg = load_config(path, DEMO_OVERRIDES + list(overrides))
    with RunDir(cfg.run_dir, resume=cfg.trainer.resume, overwrite=cfg.trainer.overwrite) as rd:
        trainer = Trainer(cfg, log=log)
        trainer.rundir = rd
        summary = trainer.run()
        report = build_report(cfg.run_dir, summary)
    log(f"held-out greedy success ({cfg.embodied['eval']['states_per_task']} fixed initial states per task): "
        f"before RL {summary['pass@1_before']:.3f} -> after {summary['steps']} GRPO steps {summary['pass@1_after']:.3f}")
    log(f"report with before/after episode strips: {report}")
    return summary
