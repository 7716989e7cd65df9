"""Per-token data in samples.jsonl (trainer/logging.py): text pieces, the sampler's log-probs, the
policy's entropy before the update and the advantages, for the rows the trainer already logs."""

import json
import math

import torch
from trainer_fixtures import tiny_overrides

from reasonrl.batch import Rollouts
from reasonrl.config import load_config
from reasonrl.trainer.logging import sample_rows, token_details


class _CharTok:
    """Id i decodes to chr(ord('a') + i); id 9 is a two-token character (first half decodes to nothing)."""

    def decode(self, ids, skip_special_tokens=False):
        out, i = "", 0
        while i < len(ids):
            if ids[i] == 9:
                out += "é" if i + 1 < len(ids) and ids[i + 1] == 9 else ""
                i += 2
            else:
                out += chr(ord("a") + ids[i])
                i += 1
        return out


def _batch():
    # row 0: tokens a b [tool: c] d, then padding; row 1: 9 9 (one character from two tokens), e
    resp = torch.tensor([[0, 1, 2, 3, 0], [9, 9, 4, 0, 0]])
    loss = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 0, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    lp = torch.tensor([[-0.5, -1.25, 0.0, -2.0, 0.0], [-0.1, -0.2, -0.3, 0.0, 0.0]])
    adv = torch.tensor([[1.5, 1.5, 1.5, 1.5, 0.0], [-0.5, -0.5, -0.5, 0.0, 0.0]]) * loss
    return Rollouts(prompt_ids=torch.zeros(2, 1, dtype=torch.long), prompt_mask=torch.ones(2, 1), response_ids=resp,
                    loss_mask=loss.float(), rollout_logp=lp, group_ids=torch.tensor([0, 0]), task_index=[0, 0],
                    response_text=["abcd", "ée"], truncated=torch.zeros(2, dtype=torch.bool),
                    rewards=torch.tensor([1.0, 0.0]), valid_mask=valid.float(), advantages=adv)


def test_token_details_hand_computed():
    b = _batch()
    ent = torch.tensor([0.7, 0.8, 0.9, 1.0, 0.0])
    d = token_details(b, 0, _CharTok(), ent)
    assert d["tokens"] == [["a", -0.5, 0.7, 1.5], ["b", -1.25, 0.8, 1.5], ["c", None, 0.9, None], ["d", -2.0, 1.0, 1.5]]
    assert d["advantage"] == 1.5  # over generated tokens only
    d = token_details(b, 1, _CharTok())
    assert [t[0] for t in d["tokens"]] == ["", "é", "e"]  # pieces join to the decoded response
    assert [t[2] for t in d["tokens"]] == [None, None, None] and d["advantage"] == -0.5


def test_sample_rows_spreads_k_rows():
    assert sample_rows(16, 4) == [0, 4, 8, 12]
    assert sample_rows(3, 4) == [0, 1, 2]
    assert sample_rows(16, 0) == []


def test_real_run_writes_token_data(tiny_model_dir, tmp_path):
    from reasonrl.trainer.loop import Trainer

    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + [
        "trainer.steps=2", "trainer.log_samples=3", "reward.functions=[trainer_fixtures:digit_reward]",
        "trainer.tensorboard=false"])
    tr = Trainer(cfg, log=lambda *a: None)
    tr.run()
    rows = [json.loads(x) for x in (tmp_path / "t" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    log_v = math.log(len(tr.tok))
    for r in rows:
        toks = r["tokens"]
        assert 0 < len(toks) <= 12
        assert "".join(t[0] for t in toks).strip() == r["response"].strip()
        assert all(t[1] <= 0 for t in toks) and any(t[1] < 0 for t in toks)
        assert all(0 < t[2] <= log_v + 1e-3 for t in toks)
        assert r["advantage"] is not None and all(t[3] == toks[0][3] for t in toks)  # GRPO: one per row
    assert any(r["advantage"] != 0 for r in rows)
