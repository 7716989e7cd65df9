"""``reasonrl demo vla``: the CLI routes to the VLA demo, and the demo writes a report with before/after
success and episode strips."""

import pytest

from reasonrl.embodied.envs import TASKS  # noqa: F401  (skips cleanly below when MuJoCo is missing)

pytest.importorskip("gymnasium_robotics")

TINY = ["trainer.prompts_per_step=2", "trainer.mini_batch_prompts=0", "rollout.n=2", "trainer.steps=1",
        "embodied.env.n_workers=0", "embodied.env.max_steps=4", "embodied.eval.states_per_task=4",
        "embodied.sft.steps=3", "embodied.policy.d_model=16", "embodied.policy.n_layer=1", "embodied.policy.n_head=2",
        "embodied.policy.n_bins=16", "trainer.epochs=1", "embodied.eval.strip_episodes=2",
        "embodied.eval.strip_size=32"]


def test_cli_demo_vla_routes_to_the_vla_demo(monkeypatch):
    from reasonrl.cli import main as cli
    from reasonrl import demo_vla as demo

    seen = []
    monkeypatch.setattr(demo, "run_vla_demo", lambda overrides: seen.append(list(overrides)))
    monkeypatch.setattr("reasonrl.demo.run_demo", lambda *a, **k: pytest.fail("the text demo ran"))
    assert cli.main(["demo", "vla", "trainer.steps=2", "--overwrite"]) == 0
    assert seen == [["trainer.steps=2", "trainer.overwrite=true"]]


def test_vla_demo_reports_before_after_and_strips(tmp_path):
    import yaml

    from reasonrl.demo_vla import CONFIG, run_vla_demo

    raw = yaml.safe_load(CONFIG.read_text())  # plain GRPO: a tiny start rarely succeeds, DAPO's filter could keep nothing
    raw["algorithm"] = {"name": "grpo", "clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"}
    (tmp_path / "vla.yaml").write_text(yaml.safe_dump(raw))
    lines = []
    summary = run_vla_demo(TINY + [f"run.out_dir={tmp_path}"], config=tmp_path / "vla.yaml", log=lines.append)
    run = tmp_path / "vla_demo"
    html = (run / "report.html").read_text()
    assert 'src="episodes/before.png"' in html and 'src="episodes/after.png"' in html
    assert (run / "episodes" / "after.gif").stat().st_size > 0
    assert {"pass@1_before", "pass@1_after"} <= set(summary) and summary["steps"] == 1
    assert any(x.startswith("held-out greedy success") for x in lines)
