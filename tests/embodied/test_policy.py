import torch
from transformers import AutoModel, ViTConfig, ViTModel

from reasonrl.embodied.policy import VLAPolicy

from vla_helpers import tiny_policy


def _inputs(policy, n=3, image=0):
    ids, mask = policy.instruction_batch(["move the gripper to the red target", "push the block to the red target",
                                          "pick up the block"][:n])
    state = torch.randn(n, policy.config.state_dim)
    img = torch.randint(0, 255, (n, image, image, 3), dtype=torch.uint8) if image else None
    return ids, mask, state, img


def test_instruction_changes_the_action_distribution():
    policy, _ = tiny_policy()
    ids, mask, state, _ = _inputs(policy, 2)
    logits = policy.call_logits(ids, mask, state[:1].expand(2, -1))
    assert logits.shape == (2, policy.config.tokens_per_call, 16)
    assert not torch.allclose(logits[0], logits[1])  # same state, different instruction


def test_save_and_load_in_hf_format(tmp_path):
    policy, _ = tiny_policy(chunk_len=3, image_size=16)
    ids, mask, state, img = _inputs(policy, 3, 16)
    policy.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    for loaded in (VLAPolicy.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, VLAPolicy)
        assert torch.allclose(loaded.call_logits(ids, mask, state, img), policy.call_logits(ids, mask, state, img))


def test_any_transformers_vision_encoder_by_path(tmp_path):
    ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)).save_pretrained(tmp_path / "vit")
    policy, _ = tiny_policy(image_size=16, vision_encoder=str(tmp_path / "vit"))
    ids, mask, state, img = _inputs(policy, 2, 16)
    out = policy.call_logits(ids, mask, state, img)
    assert out.shape == (2, policy.config.tokens_per_call, 16) and torch.isfinite(out).all()
    other = img.clone()
    other[0] = 255 - other[0]
    assert not torch.allclose(policy.call_logits(ids, mask, state, other)[0], out[0])  # the image is read


def test_act_logprobs_use_the_temperature():
    policy, _ = tiny_policy()
    ids, mask, state, _ = _inputs(policy, 3)
    tok, lp = policy.act(ids, mask, state, None, temperature=2.0, generator=torch.Generator().manual_seed(0))
    ref = torch.log_softmax(policy.call_logits(ids, mask, state) / 2.0, -1).gather(-1, tok[..., None]).squeeze(-1)
    assert torch.allclose(lp, ref, atol=1e-6)
    g, _ = policy.act(ids, mask, state, None, temperature=2.0, greedy=True)
    assert torch.equal(g, policy.call_logits(ids, mask, state).argmax(-1))


def test_gaussian_head_is_a_discretised_gaussian_over_the_bins(tmp_path):
    policy, _ = tiny_policy(chunk_len=1, head="gaussian", min_sigma=0.05)
    h = torch.zeros(1, 4, policy.config.d_model)
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.copy_(torch.tensor([0.5, -20.0]))  # mu = 1.05 tanh(0.5); sigma -> its floor
    mu = 1.05 * torch.tanh(torch.tensor(0.5))
    logits = policy.logits(h)
    c = torch.linspace(-1, 1, policy.config.n_bins)
    assert int(logits[0, 0].argmax()) == int((c - mu).abs().argmin())  # greedy = the bin nearest the mean
    p = torch.softmax(logits[0, 0], -1)
    assert torch.all(p[1:] >= 0) and torch.allclose(p.sum(), torch.tensor(1.0))
    # neighbouring bins share probability (no free per-bin logits): mass falls off with distance to mu
    d = (c - mu).abs()
    assert torch.all(p[d.argsort()][:-1] >= p[d.argsort()][1:] - 1e-7)
    policy.save_pretrained(tmp_path)  # the head kind survives save/load
    from reasonrl.embodied.policy import VLAPolicy

    assert VLAPolicy.from_pretrained(tmp_path).config.head == "gaussian"


def test_gaussian_head_with_a_fixed_width_reads_a_mean_only(tmp_path):
    policy, _ = tiny_policy(chunk_len=1, head="gaussian", min_sigma=0.3, learn_sigma=False)
    assert policy.head.out_features == 1  # no width output: nothing for the learner to widen
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.fill_(0.5)
    c = torch.linspace(-1, 1, policy.config.n_bins)
    mu = 1.05 * torch.tanh(torch.tensor(0.5))
    logits = policy.logits(torch.zeros(1, 4, policy.config.d_model))
    assert torch.allclose(logits[0, 0], -0.5 * ((c - mu) / 0.3) ** 2)
    policy.save_pretrained(tmp_path)
    from reasonrl.embodied.policy import VLAPolicy

    assert VLAPolicy.from_pretrained(tmp_path).config.learn_sigma is False
