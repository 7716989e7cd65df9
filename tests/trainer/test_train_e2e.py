"""`reasonrl train` end to end on a minimal config: metrics, samples, report, checkpoints, final policy."""

import json

from reasonrl.cli.main import main

from trainer_fixtures import tiny_overrides


def test_train_writes_every_artifact(tiny_model_dir, tmp_path):
    over = tiny_overrides(tiny_model_dir, tmp_path) + ["trainer.save_every=2", "trainer.log_samples=2"]
    assert main(["train", *over]) == 0
    run = tmp_path / "t"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in ("reward/accuracy", "response/length_mean", "actor/entropy", "batch/zero_var_frac",
                "perf/tokens_per_s", "time/gen_s", "time/reward_s", "time/train_s"):
        assert key in steps[0], key
    evals = [r for r in rows if "eval/pass@1" in r]
    assert [r["step"] for r in evals] == [0, 3]
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and {"prompt", "response", "reward", "answer"} <= set(samples[0])
    ck = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ck == ["step_2"] and (run / "checkpoints" / "step_2" / "COMMITTED").exists()
    assert (run / "final" / "config.json").exists() and (run / "report.html").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert {"pass@1_before", "pass@1_after"} <= set(summary)
    assert any(run.glob("tensorboard/events.*"))


def test_weights_change_after_training(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    over = tiny_overrides(tiny_model_dir, tmp_path) + ["reward.functions=[trainer_fixtures:digit_reward]"]
    assert main(["train", *over]) == 0
    a = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "t" / "final").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_fails_loudly(tiny_model_dir, tmp_path, capsys):
    assert main(["train", *tiny_overrides(tiny_model_dir, tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()  # nothing was written


def test_bad_override_exits_with_message(capsys):
    assert main(["train", "optim.lr=-3"]) == 2
    assert "optim.lr" in capsys.readouterr().err
