"""`reasonrl demo` end to end at toy size: before/after/control numbers land in summary.json and report.html."""

import json

from reasonrl.demo import run_demo
from reasonrl.models.tiny import TinySpec, build_default_model

SPEC = TinySpec(demos=64, sft_steps=4, hidden=32, layers=1, heads=2, ffn=64, val_size=8, eval_every=2, sft_batch=8)


def test_demo_reports_before_after_and_control(tmp_path):
    model_dir = build_default_model(SPEC, tmp_path / "m", log=lambda *a: None)
    summary = run_demo(None, [f"model.path={model_dir}", f"run.out_dir={tmp_path}", "run.threads=1",
                              "trainer.steps=2", "trainer.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=8",
                              "data.eval_size=4", "eval.k=2", "trainer.eval_every=0", "trainer.progress=false",
                              "trainer.tensorboard=false", "eval.probe_every=1", "eval.probe_heldout=3",
                              "eval.probe_train=2", "eval.probe_samples=2"], log=lambda *a: None)
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for key in ("pass@1_before", "pass@1_after", "pass@1_sft_control", "rl_seconds", "demo_wall_seconds"):
        assert key in saved and key in summary, key
    assert saved["control/control_steps"] == 1  # ceil(2 steps x 2 prompts x 2 samples / 64): equal trained sequences
    for key in ("after_vs_before_heldout_greedy_sign_p", "after_vs_control_heldout_sampled_p",
                "after_vs_control_train_sampled_diff", "probe_heldout_sampled_control", "probe_train_sampled_after"):
        assert key in saved, key
    for key in ("after_vs_before_fixed", "after_vs_before_sign_p", "after_vs_control_fixed", "after_vs_control_sign_p"):
        assert key in saved, key
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "equal-compute SFT control" in html and "pass@1_sft_control" in html
    assert (tmp_path / "demo" / "final" / "config.json").exists()
