"""LoRA GRPO end to end (models/lora.py, rollout/lora_engine.py): checkpoints hold adapter tensors and
their optimizer state only, resume is bit-exact, both exports load with the stock HF/PEFT loaders and
compute the trained policy's log-probs, and LoRA GRPO learns by the full-fine-tuning test's margin."""

import json

import pytest
import torch
from safetensors.torch import load_file
from trainer_fixtures import LEARNING_OVERRIDES, heldout_digit_reward, tiny_overrides

from reasonrl.config import load_config
from reasonrl.rollout.logprobs import sequence_logprobs
from reasonrl.rollout.sampling import SamplingParams
from reasonrl.tasks.templates import render_prompt
from reasonrl.trainer.checkpoint import load_trainer_state
from reasonrl.trainer.loop import Trainer

pytest.importorskip("peft", reason="LoRA needs the 'lora' extra (pip install 'reasonrl[lora]')")

LORA = ["model.lora.rank=4", "model.lora.alpha=8", "trainer.tensorboard=false",
        "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0", "algorithm.kl_coef=0.05"]


def _cfg(model_dir, out, name, *extra):
    return load_config(None, tiny_overrides(model_dir, out, name) + LORA + list(extra))


def _batch(tr: Trainer):
    prompts = [render_prompt(t, "plain") for t in tr.test_tasks[:4]]
    return tr.engine.generate(prompts, SamplingParams(n=2, max_new_tokens=8, seed=3), task_index=list(range(4)))


def test_lora_run_checkpoint_and_exports(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tr = Trainer(_cfg(tiny_model_dir, tmp_path, "r", "trainer.steps=2", "trainer.save_every=2"), log=lambda *a: None)
    base_before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if not p.requires_grad}
    tr.run()
    n_adapter = sum(1 for p in tr.model.parameters() if p.requires_grad)
    assert n_adapter > 0 and all("lora_" in n for n, p in tr.model.named_parameters() if p.requires_grad)
    # the base stayed frozen; the adapters moved
    assert all(torch.equal(p, base_before[n]) for n, p in tr.model.named_parameters() if not p.requires_grad)

    ck = tmp_path / "r" / "checkpoints" / "step_2"
    tensors = {k: v for f in ck.rglob("*.safetensors") for k, v in load_file(str(f)).items()}
    assert tensors and all("lora_" in k for k in tensors), sorted(tensors)[:5]
    assert sum(v.numel() for v in tensors.values()) == sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    st = load_trainer_state(ck)
    assert len(st["optimizer"]["state"]) == n_adapter  # Adam moments for adapters only
    assert [len(g["params"]) for g in st["optimizer"]["param_groups"]] == [n_adapter]
    assert st["ref"] is None or st["ref"] == {}  # the reference is the base with adapters off: no copy stored

    batch = _batch(tr)
    tr.model.eval()
    want = sequence_logprobs(tr.model, batch, temperature=1.0)[0]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), local_files_only=True)
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "r" / "final_adapter")).eval()
    got = sequence_logprobs(adapted, batch, temperature=1.0)[0]
    assert torch.equal(got, want)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "r" / "final"), local_files_only=True).eval()
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(sequence_logprobs(merged, batch, temperature=1.0)[0], want, atol=1e-5, rtol=0)
    # a PEFT adapter comes back in through the normal model path (model.path=<adapter dir>): base + merged adapter
    from reasonrl.models.loading import load_policy

    loaded, _ = load_policy(tmp_path / "r" / "final_adapter")
    torch.testing.assert_close(sequence_logprobs(loaded.eval(), batch, temperature=1.0)[0], want, atol=1e-5, rtol=0)
    # and the adapters did change the policy (the exports are not just the base model)
    with tr.model.disable_adapter():
        base_lp = sequence_logprobs(tr.model, batch, temperature=1.0)[0]
    assert not torch.allclose(base_lp, want)


def test_lora_resume_is_bit_exact(tiny_model_dir, tmp_path):
    whole = _cfg(tiny_model_dir, tmp_path, "whole", "trainer.steps=4", "trainer.save_every=2")
    Trainer(whole, log=lambda *a: None).run()
    part = _cfg(tiny_model_dir, tmp_path, "part", "trainer.steps=2", "trainer.save_every=2")
    Trainer(part, log=lambda *a: None).run()
    resumed = _cfg(tiny_model_dir, tmp_path, "part", "trainer.steps=4", "trainer.save_every=2", "trainer.resume=true")
    Trainer(resumed, log=lambda *a: None).run()

    def losses(name):
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["actor/loss"], r["actor/grad_norm"]) for r in rows if "actor/loss" in r]

    assert len(losses("whole")) == 4 and losses("part") == losses("whole")
    adapter = "final_adapter/adapter_model.safetensors"
    assert (tmp_path / "part" / adapter).read_bytes() == (tmp_path / "whole" / adapter).read_bytes()
    assert (tmp_path / "part" / "checkpoints" / "step_4" / "trainer_state.pt").is_file()


def test_resume_of_a_full_checkpoint_with_lora_is_refused(tiny_model_dir, tmp_path):
    from reasonrl.errors import ConfigError

    full = load_config(None, tiny_overrides(tiny_model_dir, tmp_path, "r") + [
        "trainer.steps=1", "trainer.save_every=1", "trainer.tensorboard=false"])
    Trainer(full, log=lambda *a: None).run()
    with pytest.raises(ConfigError, match="written without model.lora"):
        Trainer(_cfg(tiny_model_dir, tmp_path, "r", "trainer.steps=2", "trainer.resume=true"), log=lambda *a: None).run()


def test_lora_grpo_raises_heldout_reward(tiny_model_dir, tmp_path):
    """The setting and margin of test_learning.py's full-fine-tuning test, with rank-8 adapters on every
    linear layer (LoRA's usual 10x higher learning rate)."""
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + LEARNING_OVERRIDES + [
        "optim.lr=3e-2", "model.lora.rank=8", "model.lora.alpha=16"])
    tr = Trainer(cfg, log=lambda *a: None)
    before = heldout_digit_reward(tr)
    tr.run()
    after = heldout_digit_reward(tr)
    print("held-out digits per response", before, "->", after)
    assert after > before + 4.0, (before, after)


def test_async_rollout_syncs_adapters_only(tiny_model_dir, tmp_path):
    tr = Trainer(_cfg(tiny_model_dir, tmp_path, "a", "trainer.steps=2", "async_rollout.enabled=true"), log=lambda *a: None)
    tr.run()
    adapter_mb = sum(p.numel() * p.element_size() for p in tr.model.parameters() if p.requires_grad) / 2**20
    full_mb = sum(p.numel() * p.element_size() for p in tr.model.parameters()) / 2**20
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    sent = [r["sync/weights_mb"] for r in rows if "sync/weights_mb" in r]
    assert sent and all(s == adapter_mb for s in sent) and adapter_mb < full_mb / 5, (sent, adapter_mb, full_mb)


def test_resume_of_a_lora_checkpoint_without_lora_is_refused(tiny_model_dir, tmp_path):
    from reasonrl.errors import ConfigError

    Trainer(_cfg(tiny_model_dir, tmp_path, "r", "trainer.steps=1", "trainer.save_every=1"), log=lambda *a: None).run()
    full = load_config(None, tiny_overrides(tiny_model_dir, tmp_path, "r") + [
        "trainer.steps=2", "trainer.resume=true", "trainer.tensorboard=false"])
    with pytest.raises(ConfigError, match="holds a LoRA adapter"):
        Trainer(full, log=lambda *a: None).run()


def test_adapter_dir_without_a_local_base_fails_naming_the_field(tmp_path):
    from reasonrl.models.loading import ModelLoadError, load_policy

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/not-here"}))
    with pytest.raises(ModelLoadError, match="base_model_name_or_path"):
        load_policy(tmp_path)
