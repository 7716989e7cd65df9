"""A run's life around the loop: start (config, resume, logger, evaluation before RL), evaluation,
checkpoints (trainer state out and back in), and the end (final evaluation, summary, final policy).

Kept apart from the loop so the loop reads as the data flow, and in one place so run-directory
handling (locks, overwrite refusal, idempotent final evaluation) has one home. Each function takes
the ``Trainer`` (``trainer/loop.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reasonrl import _testing


# ---------------------------------------------------------------------------------------------- start
def probe_metrics(tr, step: int) -> dict[str, float]:
    """The fixed probe sets' metrics (``eval/probe.py``; off unless ``eval.probe_every``)."""
    return tr.probe(tr.engine, tr.model, step) if tr.probe else {}


def start_run(tr) -> tuple[Any, dict[str, Any], list[bool] | None]:
    """Resume if asked, write the config (only then: a failed resume leaves the run's config as it
    was), open the logger, and evaluate before RL unless an evaluation computed under exactly these
    settings is stored (``trainer/rundir.py``). Returns ``(logger, summary so far, per-problem
    correctness before RL)``."""
    from reasonrl.trainer.checkpoint import reset_counters
    from reasonrl.trainer.logging import RunLogger
    from reasonrl.trainer.rundir import eval_key

    c = tr.cfg
    tr.log(f"run {c.run.name}: starting ({c.trainer.steps} steps, algorithm {c.algorithm['name']}, resume={c.trainer.resume})")
    reset_counters(tr)  # the run's counters start at 0 (the math verifier is shared by the process)
    if c.trainer.resume:
        try_resume(tr, required=c.trainer.resume is True)
    tr.rundir.write_config(c)
    logger = RunLogger(tr.run_dir, tensorboard=c.trainer.tensorboard, trackers=c.trainer.trackers, run_name=c.run.name)
    logger.truncate_after(tr.step)
    key = eval_key(c, tr.test_tasks)
    before = tr.rundir.load_eval_before(key)  # reused only if computed under exactly these settings
    fresh = before is None
    if fresh:
        ev = evaluate(tr)
        before = tr.rundir.save_eval_before(key, ev, tr.last_eval_correct)
        tr.log(f"before RL: held-out pass@1 {ev['pass@1']:.3f}")
    logger.log_before({"step": 0, **{f"eval/{k}": v for k, v in before.metrics.items()}})
    if fresh and tr.probe:  # its own step-0 row, logged once with the evaluation it belongs to
        logger.log({"step": 0, **probe_metrics(tr, 0)})
    return logger, {"pass@1_before": before.metrics["pass@1"]}, before.correct


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(tr) -> dict[str, float]:
    """Held-out evaluation with the stage's engine and scorer. It never perturbs the training RNG
    streams or the training graders' counters, so a run that reuses a stored evaluation continues
    exactly like one that computed it."""
    from reasonrl.eval.runner import evaluate as run_eval
    from reasonrl.eval.runner import settings_from_config
    from reasonrl.trainer.checkpoint import counters_state, load_counters_state
    from reasonrl.trainer.rng import capture_rng, restore_rng

    st = settings_from_config(tr.cfg)
    was = tr.model.training
    rng, counters = capture_rng(), counters_state(tr)
    try:
        if hasattr(tr.stage, "evaluate"):  # a stage that scores its own held-out set (vla: env success)
            out, tr.last_eval_correct = tr.stage.evaluate(tr.model)
        else:
            out, tr.last_eval_correct = run_eval(tr.engine, tr.scorer, tr.test_tasks, st, return_correct=True)
        return out
    finally:
        restore_rng(rng)
        load_counters_state(tr, counters)
        tr.model.train(was)


# ---------------------------------------------------------------------------------------------- checkpoints
def trainer_state(tr) -> dict[str, Any]:
    from reasonrl.trainer.checkpoint import counters_state
    from reasonrl.trainer.rng import capture_rng

    scale = tr.scale.state_dict()  # first: it quiesces the async producer, which owns the data cursor
    stage = tr.sampler.stage
    return {"scale": scale, "step": tr.step, "rl_seconds": tr.rl_seconds, **tr.learner.state_dict(),
            "stage": stage.state_dict() if hasattr(stage, "state_dict") else None, "rng": capture_rng(),
            "counters": counters_state(tr)}


def load_trainer_state(tr, st: dict[str, Any]) -> None:
    from reasonrl.trainer.rng import restore_rng

    tr.step, tr.rl_seconds = st["step"], st["rl_seconds"]
    tr.learner.load_state_dict(st)
    if st.get("stage") is not None:
        tr.sampler.stage.load_state_dict(st["stage"])
    if not _testing.get("forget_rng"):
        restore_rng(st["rng"])
    tr.scale.load_state_dict(st.get("scale"))
    from reasonrl.trainer.checkpoint import load_counters_state

    load_counters_state(tr, st.get("counters"))


def save_checkpoint(tr) -> Path:
    from reasonrl.trainer.checkpoint import hf_writer, save_checkpoint as save

    files = {"model": hf_writer(tr.model, tr.tok)}
    delay = _testing.get("save_delay_s", 0.0)
    if delay:  # widen the save window so SIGKILLs land mid-save
        files["slow.bin"] = lambda p: (time.sleep(delay), p.write_bytes(b"x"))
    return save(tr.run_dir / "checkpoints", tr.step, files=files, state=trainer_state(tr),
                keep_last=tr.cfg.trainer.keep_last)


def try_resume(tr, required: bool = True) -> bool:
    from reasonrl.trainer.checkpoint import find_resume_point
    from reasonrl.trainer.checkpoint import load_trainer_state as load_state

    ck = find_resume_point(tr.run_dir / "checkpoints", required=required)
    if ck is None:
        tr.log(f"resume=auto: no committed checkpoint under {tr.run_dir / 'checkpoints'}; starting fresh")
        return False
    from reasonrl.models.lora import load_checkpoint_adapter

    if not load_checkpoint_adapter(tr.model, ck / "model"):  # a LoRA checkpoint holds the adapter only
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(ck / "model", local_files_only=True,
                                                      torch_dtype=next(tr.model.parameters()).dtype)
        tr.model.load_state_dict(loaded.state_dict())
    load_trainer_state(tr, load_state(ck))
    tr.log(f"resumed from {ck} (step {tr.step})")
    return True


# ---------------------------------------------------------------------------------------------- end
def finish_run(tr, logger, summary: dict[str, Any], before_correct: list[bool] | None) -> dict[str, Any]:
    """Final evaluation, the summary (paired before/after test, throughput, memory), the final policy."""
    import resource

    from reasonrl.models.lora import save_final

    ev = evaluate(tr)
    final_probe = probe_metrics(tr, tr.step) if tr.probe and not tr.probe.due(tr.step) else {}
    logger.log({"step": tr.step, **{f"eval/{k}": v for k, v in ev.items()}, **final_probe})
    if before_correct is not None:  # same problems before and after: a paired test, not two intervals
        from reasonrl.eval.metrics import paired_comparison

        summary.update(paired_comparison(before_correct, tr.last_eval_correct, "after_vs_before"))
    rows = [r for r in logger.read_metrics() if "perf/gen_tokens_per_s" in r]
    for key in ("perf/gen_tokens_per_s", "perf/train_tokens_per_s", "perf/tokens_per_s"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        summary[f"mean_{key.split('/')[1]}"] = sum(vals) / len(vals) if vals else None
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary.update({"pass@1_after": ev["pass@1"], "steps": tr.step, "rl_seconds": tr.rl_seconds,
                    **{f"final/{k}": v for k, v in ev.items()}})
    save_final(tr.model, tr.tok, tr.run_dir)  # LoRA: merged model in final/, the adapter in final_adapter/
    logger.close()
    return summary
