"""LatentSeek mechanics on a random tiny Llama: latent capture, U = int(rho*T), update sign, stopping,
self-reward arithmetic and verdict parsing, grading fallback, baselines and the CLI."""

import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))

from trainer_fixtures import make_tiny_model_dir  # noqa: E402

from reasonrl.rollout.hf_engine import HFEngine  # noqa: E402
from reasonrl.rollout.sampling import SamplingParams  # noqa: E402
from reasonrl.testtime import (  # noqa: E402
    DEFAULT_WEIGHTS,
    SampledBaseline,
    capture_latents,
    latent_loss,
    latent_step,
    latentseek,
    num_latents,
    oracle_reward,
    parse_verdict,
    self_reward,
    should_stop,
)
from reasonrl.testtime.grading import graded_text  # noqa: E402
from reasonrl.testtime.latentseek import head_fn  # noqa: E402

PROMPTS = ["Compute 3+4.\n", "Compute 12*3-7+55.\n", "Compute 9.\n"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("ls_model"), hidden=32, layers=2, seed=3)


@pytest.fixture(scope="module")
def engine(model_dir):
    from reasonrl.models.loading import load_policy

    model, tok = load_policy(model_dir)
    torch.manual_seed(0)
    with torch.no_grad():  # larger random weights: diverse greedy tokens instead of one repeated token
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return HFEngine(model, tok, eos_token_ids=[])  # never stop early: full-length answers


# ------------------------------------------------------------------------------ capture
def test_argmax_of_captured_latents_reproduces_greedy_tokens(engine):
    """Prompts of different lengths (left padding) and the last-layer post-norm states."""
    out = engine.generate(PROMPTS, SamplingParams(greedy=True, max_new_tokens=10))
    z = capture_latents(engine.model, out.prompt_ids, out.prompt_mask, out.response_ids, 10)
    assert z.shape == (3, 10, engine.model.config.hidden_size)
    with torch.no_grad():
        tokens = head_fn(engine.model)(z).argmax(-1)
    assert torch.equal(tokens, out.response_ids)
    # a state one position off does not reproduce them (the test can fail)
    assert not torch.equal(tokens[:, 1:], out.response_ids[:, :-1])


def test_capture_zero_latents_is_empty(engine):
    out = engine.generate(PROMPTS[:1], SamplingParams(greedy=True, max_new_tokens=3))
    assert capture_latents(engine.model, out.prompt_ids, out.prompt_mask, out.response_ids, 0).shape == (1, 0, 32)


# ------------------------------------------------------------------------------ U = int(rho * T)
@pytest.mark.parametrize("length,rho,cap,expected", [
    (0, 0.1, 300, 0), (9, 0.1, 300, 0), (10, 0.1, 300, 1), (19, 0.1, 300, 1), (45, 0.2, 300, 9),
    (64, 0.2, 300, 12), (5000, 1.0, 300, 300), (5000, 0.1, 300, 300), (7, 1.0, 300, 7), (20, 0.5, 3, 3),
    (100, 0.29, 300, 28),  # 0.29*100 = 28.999999999999996 in floats: int() truncates, as in the reference
])
def test_num_latents_rounding(length, rho, cap, expected):
    assert num_latents(length, rho, cap) == expected


def test_num_latents_rejects_negative_length():
    with pytest.raises(ValueError):
        num_latents(-1, 0.1)


class Scripted:
    """Reward per problem from a list, one entry per call for that problem (last entry repeats)."""

    def __init__(self, script):
        self.script, self.calls = script, {i: 0 for i in script}
        self.seen: list[list[int]] = []

    def __call__(self, problems, texts):
        self.seen.append(list(problems))
        out = []
        for i in problems:
            seq = self.script[i]
            out.append(seq[min(self.calls[i], len(seq) - 1)])
            self.calls[i] += 1
        return out


def test_zero_latents_returns_the_cot_answer(engine):
    """rho*T < 1 -> U = 0: the CoT answer comes back after one scoring, with no iterations."""
    fn = Scripted({0: [-1.0], 1: [-1.0]})
    res = latentseek(engine, PROMPTS[:2], fn, rho=0.05, max_iters=5, max_new_tokens=10)
    assert [r.n_latents for r in res] == [0, 0]
    assert [r.iterations for r in res] == [0, 0]
    assert all(r.final_text == r.initial_text for r in res)
    assert fn.seen == [[0, 1]]


# ------------------------------------------------------------------------------ the update
def test_latent_loss_hand_value():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # argmax tokens 0 and 1
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = math.e / (math.e + 1)
    loss = latent_loss(logits, torch.tensor([-0.5]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(0.5 * math.log(p0 + 1e-8), rel=1e-6)
    loss = latent_loss(logits, torch.tensor([-1.0]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(math.log(p0 + 1e-8) + math.log(p1 + 1e-8), rel=1e-6)


def _setup(seed=0, b=3, u=4, d=8, v=11):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(d, v, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, d, generator=g))
    head.requires_grad_(False)
    z = torch.randn(b, u, d, generator=g)
    return head, z


def _logp_of(head, z, tokens):
    return torch.log_softmax(head(z), -1).gather(-1, tokens[..., None]).squeeze(-1)


def test_negative_reward_lowers_logprob_of_current_argmax_and_zero_reward_is_a_no_op():
    head, z0 = _setup()
    x_hat = head(z0).argmax(-1)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=1e-3)
    latent_step(z, opt, head, torch.tensor([-1.0, 0.0, -0.25]), torch.ones(3, 4))
    with torch.no_grad():
        before, after = _logp_of(head, z0, x_hat), _logp_of(head, z, x_hat)
    assert bool((after[0] < before[0]).all()) and bool((after[2] < before[2]).all())
    assert torch.equal(z[1].detach(), z0[1])  # r = 0: zero gradient, Adam moves nothing


def test_mask_freezes_positions_beyond_u():
    head, z0 = _setup()
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=1e-2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    latent_step(z, opt, head, torch.full((3,), -1.0), mask)
    moved = (z.detach() != z0).any(-1)
    assert torch.equal(moved, mask)


def test_batched_adam_equals_one_optimiser_per_problem():
    """Adam is element-wise, so stacking problems changes nothing (the batching claim)."""
    head, z0 = _setup(seed=1)
    r = torch.tensor([-1.0, -0.5, -1 / 3])
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(3):
        latent_step(z, opt, head, r, torch.ones(3, 4))
    for i in range(3):
        zi = z0[i:i + 1].clone().requires_grad_(True)
        oi = torch.optim.Adam([zi], lr=0.05)
        for _ in range(3):
            latent_step(zi, oi, head, r[i:i + 1], torch.ones(1, 4))
        torch.testing.assert_close(zi.detach()[0], z.detach()[i], rtol=1e-6, atol=1e-7)


def test_per_problem_grad_clip():
    head, z0 = _setup()
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=1.0)
    latent_step(z, opt, head, torch.tensor([-1.0, -1.0, -1.0]), torch.ones(3, 4), grad_clip=1e-3)
    step = (z.detach() - z0).flatten(1).norm(dim=1)
    torch.testing.assert_close(step, torch.full((3,), 1e-3), rtol=1e-4, atol=0)


# ------------------------------------------------------------------------------ the loop
def test_stopping_at_the_threshold(engine):
    fn = Scripted({
        0: [-1.0, -1.0, -0.5, -0.1],  # passes at iteration 3
        1: [-1 / 6],                  # one failed weight-1 check: stops before any iteration
        2: [-1.0],                    # never passes: uses the whole budget
    })
    res = latentseek(engine, PROMPTS, fn, rho=0.5, lr=0.05, max_iters=5, threshold=-0.2, max_new_tokens=10)
    assert [r.iterations for r in res] == [3, 0, 5]
    assert [r.stopped for r in res] == [True, True, False]
    assert res[0].rewards == [-1.0, -1.0, -0.5, -0.1]
    assert res[2].rewards == [-1.0] * 6
    assert [r.generations for r in res] == [4, 1, 6]
    # scoring calls: initial for all, then only the problems still searching
    assert fn.seen == [[0, 1, 2], [0, 2], [0, 2], [0, 2], [2], [2]]


def test_reward_equal_to_threshold_does_not_stop(engine):
    fn = Scripted({0: [-0.2, -0.2, 0.0]})
    res = latentseek(engine, PROMPTS[:1], fn, rho=0.5, max_iters=5, threshold=-0.2, max_new_tokens=10)
    assert res[0].iterations == 2 and res[0].stopped


def test_unchanged_latents_regenerate_the_same_answer(engine):
    """A negligible step keeps the argmax prefix; prompt + prefix then regenerates the greedy answer
    token for token: the prefix is appended as tokens and z itself is never fed to the model."""
    fn = Scripted({0: [-1.0], 1: [-1.0], 2: [-1.0]})
    res = latentseek(engine, PROMPTS, fn, rho=0.5, lr=1e-9, max_iters=2, max_new_tokens=10)
    assert all(r.iterations == 2 for r in res)
    assert [r.final_text for r in res] == [r.initial_text for r in res]


def test_large_steps_change_the_prefix(engine):
    fn = Scripted({0: [-1.0], 1: [-1.0], 2: [-1.0]})
    res = latentseek(engine, PROMPTS, fn, rho=0.5, lr=2.0, max_iters=3, max_new_tokens=10)
    assert any(r.final_text != r.initial_text for r in res)


def test_model_stays_frozen_and_flags_are_restored(engine):
    flags = [p.requires_grad for p in engine.model.parameters()]
    before = [p.detach().clone() for p in engine.model.parameters()]
    latentseek(engine, PROMPTS[:2], Scripted({0: [-1.0], 1: [-1.0]}), rho=0.5, lr=1.0, max_iters=2, max_new_tokens=8)
    assert [p.requires_grad for p in engine.model.parameters()] == flags
    assert all(torch.equal(a, p) for a, p in zip(before, engine.model.parameters()))
    assert all(p.grad is None for p in engine.model.parameters())


# ------------------------------------------------------------------------------ rewards
CHECKS = list(DEFAULT_WEIGHTS)  # calculation_check 2, answer_correct 1, answer_completeness 2, understanding_check 1


def test_self_reward_every_failure_pattern():
    hand = {(): 0.0, ("calculation_check",): -2 / 6, ("answer_correct",): -1 / 6, ("answer_completeness",): -2 / 6,
            ("understanding_check",): -1 / 6, ("answer_correct", "understanding_check"): -2 / 6,
            ("calculation_check", "answer_completeness"): -4 / 6, tuple(CHECKS): -1.0}
    stopping = []
    for k in range(5):
        for failed in itertools.combinations(CHECKS, k):
            for fail_value in (False, None):  # unparsable counts exactly like False
                verdicts = {c: (fail_value if c in failed else True) for c in CHECKS}
                r = self_reward(verdicts)
                expected = -sum(DEFAULT_WEIGHTS[c] for c in failed) / 6
                assert r == pytest.approx(expected)
                if failed in hand:
                    assert r == pytest.approx(hand[failed])
            if should_stop(r, -0.2):
                stopping.append(failed)
    assert stopping == [(), ("answer_correct",), ("understanding_check",)]


def test_self_reward_format_rule_and_errors():
    ok = {c: True for c in CHECKS}
    bad = {c: False for c in CHECKS}
    assert self_reward(ok, format_ok=True) == 0.0
    assert self_reward(ok, format_ok=False) == pytest.approx(-2 / 6)
    assert self_reward(bad, format_ok=False) == pytest.approx(-8 / 6)
    assert self_reward(ok, format_ok=None) == 0.0
    with pytest.raises(ValueError, match="no verdict"):
        self_reward({"calculation_check": True})


def test_oracle_reward_and_threshold():
    assert oracle_reward(True) == 0.0 and oracle_reward(False) == -1.0
    assert should_stop(0.0, -0.2) and should_stop(-1 / 6, -0.2)
    assert not should_stop(-0.2, -0.2) and not should_stop(-1 / 3, -0.2)


@pytest.mark.parametrize("text,expected", [
    ("All steps check out. FINAL VERIFICATION ANSWER IS: True", True),
    ("FINAL VERIFICATION ANSWER IS: False.", False),
    ("final verification answer is: **TRUE**", True),
    ("FINAL VERIFICATION ANSWER IS: True ... wait. FINAL VERIFICATION ANSWER IS: False", False),
    ("FINAL VERIFICATION ANSWER IS: maybe", None),
    ("FINAL VERIFICATION ANSWER IS:", None),
    ("True, the answer is right.", True),
    ("false", False),
    ("The answer is True", None),
    ("Truely correct", None),
    ("Yes", None),
    ("", None),
    ("4-010420000000422", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) is expected


def test_oracle_reward_fn_grades_with_the_scorer():
    from reasonrl.rewards import Scorer
    from reasonrl.tasks import Task
    from reasonrl.testtime import OracleReward

    tasks = [Task(uid="a", prompt="Compute 3+4.", answer="7"), Task(uid="b", prompt="Compute 2*5.", answer="10")]
    fn = OracleReward(Scorer(), tasks)
    assert fn([0, 1, 0], ["so \\boxed{7}", "\\boxed{11}", "7"]) == [0.0, -1.0, -1.0]  # no box = unparsable = wrong
    assert OracleReward(Scorer(), tasks, "last_number")([0], ["3+4 is 7"]) == [0.0]


def test_graded_text_fallback():
    assert graded_text("12 then 15.", "last_number") == "\\boxed{15}"
    assert graded_text("1,024 total", "last_number") == "\\boxed{1024}"
    assert graded_text("x \\boxed{3} then 9", "last_number") == "x \\boxed{3} then 9"
    assert graded_text("12 then 15.", "none") == "12 then 15."
    assert graded_text("no digits", "last_number") == "no digits"


def test_sampled_baseline_verdicts():
    b = SampledBaseline(answers=["5", "7", "7", None], correct=[False, True, True, False])
    assert b.majority_correct and b.best_of_n_correct and b.first_correct == 2
    b = SampledBaseline(answers=["5", "5", "7", None], correct=[False, False, True, False])
    assert not b.majority_correct and b.best_of_n_correct and b.first_correct == 3
    b = SampledBaseline(answers=[None, None], correct=[False, False])
    assert not b.majority_correct and not b.best_of_n_correct and b.first_correct is None


# ------------------------------------------------------------------------------ config and CLI
def test_config_validation_names_the_field():
    from reasonrl.config import ConfigError
    from reasonrl.testtime.run import parse_config

    with pytest.raises(ConfigError, match="latentseek.rho"):
        parse_config(["rho=0"])
    with pytest.raises(ConfigError, match="unknown verifier checks"):
        parse_config(["verifier_weights={typo: 1}"])
    with pytest.raises(ConfigError, match="latentseek.reward"):
        parse_config([], reward="both")
    cfg = parse_config(["latentseek.max_iters=4", "lr=0.5"], base={"lr": 0.1, "n_problems": 7}, n_problems=3)
    assert (cfg.max_iters, cfg.lr, cfg.n_problems, cfg.n_baseline) == (4, 0.5, 3, 5)


@pytest.mark.parametrize("reward", ["oracle", "self"])
def test_cli_smoke(model_dir, tmp_path, capsys, reward):
    from reasonrl.cli.main import main

    out = tmp_path / "ls"
    rc = main(["latentseek", "--model", str(model_dir), "--reward", reward, "--n", "3", "--out", str(out),
               "max_new_tokens=12", "max_iters=2", "rho=0.5", "baseline_n=2", "verifier_max_new_tokens=4",
               "progress=false", "threads=1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"greedy_cot", f"latentseek_{reward}", "majority@2", "oracle_best_of_2"}
    assert summary["command"].startswith("reasonrl ")
    st = summary["latentseek"][reward]
    assert 0 <= st["mean_iterations"] <= 2
    if reward == "self":
        assert st["verifier"]["checks"] == 4 * 3 * (1 + st["mean_iterations"])
    rows = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert sum(r["arm"] == reward for r in rows) == 3 and sum(r["arm"] == "baselines" for r in rows) == 3
    printed = capsys.readouterr().out
    assert "iterations" in printed and ("changed" in printed or "same" in printed)


def test_cli_bad_setting_exits_2(model_dir, tmp_path, capsys):
    from reasonrl.cli.main import main

    assert main(["latentseek", "--model", str(model_dir), "--out", str(tmp_path), "max_iters=-1"]) == 2
    assert "latentseek.max_iters" in capsys.readouterr().err


def test_bench_toy_size_writes_results_with_the_command(model_dir, tmp_path):
    from reasonrl.bench.latentseek import bench_latentseek

    out = tmp_path / "bench"
    args = ["models=tiny", f"out={out}", f"tiny.model={model_dir}", "tiny.n_problems=2", "tiny.max_iters=1",
            "tiny.max_new_tokens=8", "tiny.verifier_max_new_tokens=2", "tiny.progress=false", "tiny.threads=1"]
    assert bench_latentseek(args) == 0
    res = json.loads((out / "results.json").read_text())["models"]["tiny"]
    assert res["command"] == "reasonrl bench latentseek " + " ".join(args)
    assert {"greedy_cot", "latentseek_oracle", "latentseek_self", "latentseek_oracle_lr0.5", "majority@2",
            "oracle_best_of_2"} == set(res["arms"])
    assert res["config"]["rho"] == 0.2 and res["config"]["max_iters"] == 1  # preset, then the override
    md = (out / "results.md").read_text()
    assert "reasonrl bench latentseek models=tiny" in md and "load average" in md


def test_bench_rejects_unknown_settings():
    from reasonrl.bench.latentseek import bench_latentseek
    from reasonrl.config import ConfigError

    with pytest.raises(ConfigError, match="unknown models"):
        bench_latentseek(["models=gpt5"])
    with pytest.raises(ConfigError, match="unknown setting"):
        bench_latentseek(["iters=3"])


def test_matched_budget_from_problem_rows(tmp_path):
    from reasonrl.bench.latentseek import matched_budget

    rows = [{"arm": "oracle", "generations": 3, "final_correct": False},
            {"arm": "oracle", "generations": 2, "final_correct": True},
            {"arm": "baselines", "correct": [False, True, True, True]},
            {"arm": "baselines", "correct": [False, False, False, True]}]
    p = tmp_path / "problems.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    mb = matched_budget(p)
    assert mb["k"] == 2  # floor(mean 2.5)
    assert mb["oracle_best_of_k"]["correct"] == 1
    assert mb["latentseek_oracle_vs_best_of_k"] == {"p_fixed": 1, "p_broke": 1, "p_sign_p": 1.0}
    assert matched_budget(tmp_path / "missing.jsonl") is None
