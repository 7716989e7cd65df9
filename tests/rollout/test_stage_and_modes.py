"""The seams other rollout kinds code against: the policy's own ``sequence_logprobs``, the mode
registry, and the text rollout stage's contract (contiguous groups, rewards, cursor state)."""

import pytest
import torch

from reasonrl.batch import Rollouts
from reasonrl.rollout.logprobs import sequence_logprobs


def _batch(b=2, tp=3, tr=4) -> Rollouts:
    return Rollouts(prompt_ids=torch.ones(b, tp, dtype=torch.long), prompt_mask=torch.ones(b, tp, dtype=torch.long),
                    response_ids=torch.ones(b, tr, dtype=torch.long), loss_mask=torch.ones(b, tr),
                    rollout_logp=torch.zeros(b, tr), group_ids=torch.arange(b), task_index=list(range(b)),
                    response_text=[""] * b, truncated=torch.zeros(b, dtype=torch.bool))


class ToyPolicy(torch.nn.Module):
    """A non-causal-LM policy: one logit per response token, scored by its own method."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def sequence_logprobs(self, batch, temperature, with_entropy=False, return_hidden=False, micro_batch=None):
        self.calls.append(dict(temperature=temperature, with_entropy=with_entropy, return_hidden=return_hidden,
                               micro_batch=micro_batch))
        logp = torch.nn.functional.logsigmoid(self.w / temperature) * batch.loss_mask
        ent = torch.zeros_like(logp) if with_entropy else None
        return (logp, ent, torch.zeros(len(batch), 1, 1)) if return_hidden else (logp, ent)


def test_sequence_logprobs_delegates_to_the_policy_method_with_every_argument():
    pol, b = ToyPolicy(), _batch()
    out = sequence_logprobs(pol, b, temperature=2.0, micro_batch=5, with_entropy=True, return_hidden=True)
    assert pol.calls == [dict(temperature=2.0, with_entropy=True, return_hidden=True, micro_batch=5)]
    assert len(out) == 3 and torch.allclose(out[0], torch.nn.functional.logsigmoid(torch.tensor(0.25)).expand(2, 4))
    logp, ent = sequence_logprobs(pol, b, temperature=1.0)
    assert ent is None and logp.shape == (2, 4)
    logp.sum().backward()  # gradients flow through the policy's own computation
    assert pol.w.grad is not None
    with pytest.raises(ValueError, match="temperature"):
        sequence_logprobs(pol, b, temperature=0.0)


def test_mode_registry_registers_resolves_and_names_the_unknown():
    from reasonrl.config import load_config
    from reasonrl.modes import available_modes, get_mode, mode_name, register_mode

    assert {"text", "ttrl", "ssrl"} <= set(available_modes())
    made = []
    register_mode("toy_mode_for_test", lambda cfg, model, tok, scorer: made.append(cfg) or "stage")
    assert get_mode("toy_mode_for_test")(1, 2, 3, 4) == "stage" and made == [1]
    with pytest.raises(ValueError, match="register_mode"):
        get_mode("no_such_mode")
    with pytest.raises(TypeError):
        register_mode("bad", 3)
    assert mode_name(load_config(None, [])) == "text"
    assert mode_name(load_config(None, ["ttrl.enabled=true", "ttrl.n_votes=8"])) == "ttrl"
    assert mode_name(load_config(None, ["ssrl.reward=true"])) == "ssrl"
    assert mode_name(load_config(None, ["rollout.mode=toy_mode_for_test"])) == "toy_mode_for_test"


def test_make_rollout_stage_refuses_an_engine_for_a_mode_that_builds_its_own():
    from reasonrl.config import load_config
    from reasonrl.modes import register_mode
    from reasonrl.modes import make_rollout_stage

    register_mode("own_rollout_for_test", lambda cfg, model, tok, scorer: "stage")
    cfg = load_config(None, ["rollout.mode=own_rollout_for_test"])
    assert make_rollout_stage(cfg, None, None, None) == "stage"
    with pytest.raises(ValueError, match="distributed.mode=local"):
        make_rollout_stage(cfg, None, None, None, engine=object())


def _file_stream(tmp_path, **data):
    import json

    from reasonrl.config import load_config
    from reasonrl.rollout.stage import TaskStream

    path = tmp_path / "rows.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(10)))
    seed = data.pop("seed", 0)
    cfg = load_config(None, [f"data.train={path}", f"run.seed={seed}", *(f"data.{k}={v}" for k, v in data.items())])
    return TaskStream.from_config(cfg)


def _answers(stream, n):
    return [t.answer for t in stream.next(n)]


def test_a_file_dataset_is_shuffled_per_epoch_by_the_run_seed_and_resumes_at_its_cursor(tmp_path):
    in_order = _answers(_file_stream(tmp_path, shuffle="false"), 12)
    assert in_order == [str(i) for i in range(10)] + ["0", "1"]
    s = _file_stream(tmp_path)
    first, second = _answers(s, 10), _answers(s, 10)
    assert sorted(first, key=int) == sorted(second, key=int) == [str(i) for i in range(10)]  # each epoch once
    assert first != in_order[:10] and first != second  # a fresh order each epoch
    assert _answers(_file_stream(tmp_path, seed=1), 10) != first  # the run seed picks the order
    resumed = _file_stream(tmp_path)
    resumed.load_state_dict({"cursor": 7})
    assert _answers(resumed, 6) == (first + second)[7:13]
