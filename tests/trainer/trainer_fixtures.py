"""A tiny random (untrained) built-in-style model saved in HF format, for fast trainer tests."""

from pathlib import Path


def make_tiny_model_dir(out: Path, hidden: int = 32, layers: int = 1, seed: int = 0) -> Path:
    from reasonrl.models.tiny import TinySpec, _tokenizer_corpus, build_model
    from reasonrl.models.tokenizer import train_tokenizer

    spec = TinySpec(hidden=hidden, layers=layers, heads=2, ffn=hidden * 2, demos=50, seed=seed)
    tok = train_tokenizer(_tokenizer_corpus(spec), 128)
    model = build_model(spec, tok)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def tiny_overrides(model_dir: Path, run_dir: Path, name: str = "t") -> list[str]:
    return [
        f"model.path={model_dir}", f"run.out_dir={run_dir}", f"run.name={name}", "run.threads=1",
        "data.eval_size=8", "rollout.n=4", "rollout.max_new_tokens=12", "trainer.prompts_per_step=4",
        "trainer.steps=3", "trainer.progress=false", "eval.k=2", "optim.lr=1e-3",
    ]


def digit_reward(prompt: str, response: str, answer: str, meta: dict) -> float:
    """A dense test reward (count of digit characters) so an untrained model gets mixed rewards."""
    return float(sum(ch.isdigit() for ch in response))


# The setting of the minute-scale learning tests (test_learning.py, and its LoRA twin with its own lr): a dense
# digit reward so an untrained model has mixed-reward groups, greedy scoring on the held-out split.
LEARNING_OVERRIDES = [
    "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0", "data.eval_size=32",
    "rollout.n=8", "rollout.max_new_tokens=16", "trainer.prompts_per_step=8", "trainer.steps=30",
    "eval.sampled=false", "trainer.tensorboard=false", "run.seed=0"]


def heldout_digit_reward(tr) -> float:
    """Mean ``digit_reward`` of the trainer's greedy responses to its held-out prompts."""
    from reasonrl.rollout.sampling import SamplingParams
    from reasonrl.tasks.templates import render_prompt

    prompts = [render_prompt(t, "plain") for t in tr.test_tasks]
    ro = tr.engine.generate(prompts, SamplingParams(greedy=True, max_new_tokens=16), task_index=list(range(len(prompts))))
    return sum(digit_reward(p, r, "", {}) for p, r in zip(prompts, ro.response_text)) / len(prompts)
