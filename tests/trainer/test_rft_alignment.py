"""Rejection-sampling fine-tuning on the policy's own samples must see exactly the tokens, masks and
positions that supervised training on the same token sequences sees. A misalignment here (the
pilot's suspected defect) would make RL on correct self-samples degrade a model that SFT improves."""

import torch
from trainer_fixtures import tiny_overrides

from reasonrl.algorithms.recipes import ForwardOut, Norm, StepContext
from reasonrl.config import load_config
from reasonrl.rollout.logprobs import sequence_logprobs
from reasonrl.trainer.loop import Trainer
from reasonrl.trainer.sft import collate, sft_loss


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_rft_gradient_equals_sft_on_the_same_tokens(tiny_model_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + [
        "algorithm.name=rft", "rollout.n=4", "trainer.prompts_per_step=4", "rollout.max_new_tokens=16",
        "rollout.temperature=1.0"])
    tr = Trainer(cfg, log=lambda *a: None)
    batch, tasks, _ = tr.collect()
    assert batch.prompt_mask.eq(0).any(), "prompts should be ragged (left padding exercised)"
    # mark a ragged subset "correct": different prompt and response lengths, some without EOS
    chosen = [0, 3, 5, 6, 9, 14]
    batch.info["correct"] = [i in chosen for i in range(len(batch))]
    batch = tr.recipe.prepare(batch, StepContext(forward=None, demo_rows=None, tasks=tasks, step=0))
    assert tr.recipe.row_active(batch).nonzero().flatten().tolist() == chosen
    mask = batch.loss_mask.float()
    norm = Norm(num_tokens=float(mask.sum()), num_seqs=float((mask.sum(1) > 0).sum()), loss_scale_factor=16.0)

    tr.model.train()
    tr.model.zero_grad()
    mb = batch.select(chosen).trim()
    logp, ent = sequence_logprobs(tr.model, mb, temperature=1.0, with_entropy=True)
    loss_rl, _ = tr.recipe.loss(mb, ForwardOut(logp=logp, entropy=ent), norm)
    loss_rl.backward()
    g_rl = _grads(tr.model)

    tr.model.zero_grad()
    enc = [(batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist(),
            batch.response_ids[i][batch.loss_mask[i].bool()].tolist()) for i in chosen]
    loss_sft = sft_loss(tr.model, collate(enc, tr.tok.pad_token_id))
    loss_sft.backward()
    g_sft = _grads(tr.model)

    torch.testing.assert_close(loss_rl, loss_sft, rtol=1e-5, atol=1e-6)
    assert g_rl.keys() == g_sft.keys()
    for k in g_rl:
        torch.testing.assert_close(g_rl[k], g_sft[k], rtol=1e-4, atol=1e-6, msg=k)
