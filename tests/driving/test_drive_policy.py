"""DriveMoE policy: one view encoded at inference, router gradients per stage, matched compute, HF save/load."""

import pytest
import torch

from reasonrl.driving.policy import DriveConfig, DrivePolicy
from reasonrl.models import flow_head as fh


def _batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = torch.randint(0, 256, (b, 5, 48, 48), generator=g, dtype=torch.uint8)
    state = torch.randn(b, 6, generator=g)
    wp = torch.randn(b, 5, 2, generator=g) * 5
    return views, state, wp, torch.randint(0, 4, (b,), generator=g), torch.randint(0, 5, (b,), generator=g)


def _policy(variant="full_moe"):
    torch.manual_seed(0)
    return DrivePolicy(DriveConfig(variant=variant))


@pytest.mark.parametrize("variant", ["dense", "vision_moe", "full_moe"])
def test_one_candidate_view_encoded_at_inference(variant):
    p = _policy(variant)
    views, state, *_ = _batch()
    p.encoded_images = 0
    wp, chain, logp, info = p.act(views, state)
    assert wp.shape == (6, 5, 2) and chain.shape == (6, 11, 5, 2)
    assert p.encoded_images == 2 * 6  # center + ONE candidate per sample, whatever the variant
    if variant != "dense":
        p.encoded_images = 0
        p.context(views, state, "gumbel")
        assert p.encoded_images == 5 * 6  # stage 2 encodes all four candidates


def test_inference_uses_the_chosen_view_only():
    p = _policy("vision_moe")
    views, state, *_ = _batch(4)
    with torch.no_grad():
        _, r = p.context(views, state, "argmax")
        ctx_a, _ = p.context(views, state, "teacher", view_labels=r.idx[:, 0])
        ctx_b, _ = p.context(views, state, "argmax")
        other = views.clone()
        for i, v in enumerate(r.idx[:, 0].tolist()):  # scribble over every view that was not chosen
            for u in range(4):
                if u != v:
                    other[i, 1 + u] = 0
        ctx_c, _ = p.context(other, state, "argmax")
    assert torch.allclose(ctx_a, ctx_b, atol=1e-6) and torch.allclose(ctx_b, ctx_c, atol=1e-6)


def _router_grad(p, stage):
    p.zero_grad()
    views, state, wp, vl, sl = _batch()
    ctx, _ = p.context(views, state, "teacher" if stage == 1 else "gumbel", vl, torch.Generator().manual_seed(0))
    fh.fm_loss(p.velocity, p.normalise(wp), {"ctx": ctx, "mode": "topk"}, generator=torch.Generator().manual_seed(0)).backward()
    g = [q.grad for q in p.router_head.parameters()]
    return sum(float(x.abs().sum()) for x in g if x is not None)


def test_action_loss_reaches_camera_router_only_in_stage_2():
    p = _policy("vision_moe")
    assert _router_grad(p, 1) == 0.0
    assert _router_grad(p, 2) > 0.0
    p.zero_grad()
    loss, logs = p.imitation_loss(*_batch(), stage=1)
    loss.backward()
    assert sum(float(x.grad.abs().sum()) for x in p.router_head.parameters()) > 0  # focal loss trains it
    assert set(logs) == {"fm", "view_focal"}


def test_full_moe_routes_and_supervises_skills():
    p = _policy("full_moe")
    loss, logs = p.imitation_loss(*_batch(), stage=2, generator=torch.Generator().manual_seed(0))
    assert set(logs) == {"fm", "view_focal", "skill_focal"}
    r = p.last_action_routing
    assert r.idx.shape == (6, 2) and torch.allclose(r.weights.sum(-1), torch.ones(6), atol=1e-6)


def test_matched_active_compute():
    """The dense FFN's width equals the MoE's active width, so per-call FLOPs match."""
    dense, moe = _policy("dense"), _policy("full_moe")
    c = moe.config
    d_ffn = dense.blocks[-1].ffn
    assert d_ffn.up.out_features == (c.moe_top_k + c.n_shared) * c.expert_hidden
    active = sum(e.up.out_features for e in list(moe.blocks[-1].ffn.experts)[: c.moe_top_k]) + \
        sum(s.up.out_features for s in moe.blocks[-1].ffn.shared)
    assert active == d_ffn.up.out_features


def test_save_and_load_in_hf_format(tmp_path):
    from transformers import AutoModel

    p = _policy("full_moe")
    p.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    q = AutoModel.from_pretrained(tmp_path)
    assert isinstance(q, DrivePolicy) and q.config.variant == "full_moe"
    views, state, *_ = _batch(3)
    a = p.act(views, state, generator=torch.Generator().manual_seed(5))[0]
    b = q.act(views, state, generator=torch.Generator().manual_seed(5))[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_bad_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        DriveConfig(variant="sparse")


def test_skill_routing_is_one_decision_per_call_across_euler_steps():
    """The action router reads the observation context, so every denoising step of a call uses the same
    experts (routing on the noisy action states switched experts mid-integration)."""
    p = _policy("full_moe")
    views, state, *_ = _batch(4)
    seen = []
    orig = p.velocity

    def spy(x, t, cond):
        v = orig(x, t, cond)
        seen.append(p.last_action_routing.idx.clone())
        return v

    p.velocity = spy
    p.act(views, state, noise=0.1, generator=torch.Generator().manual_seed(0))
    assert len(seen) == p.config.flow_steps
    assert all(torch.equal(s, seen[0]) for s in seen)


def test_camera_router_reads_the_state_token():
    """The view label looks 40 m out, the centre window +-20 m: the router also sees the state token (ego and
    neighbour kinematics), so changing only a neighbour's position changes its logits."""
    torch.manual_seed(0)
    p = DrivePolicy(DriveConfig(variant="vision_moe", state_dim=26))
    views, _, *_ = _batch(2)
    state = torch.zeros(2, 26)
    moved = state.clone()
    moved[:, 6:11] = torch.tensor([1.0, 0.6, 0.0, 0.0, 0.0])  # a vehicle 30 m ahead
    with torch.no_grad():
        a = p.context(views, state, "argmax")[1].logits
        b = p.context(views, moved, "argmax")[1].logits
    assert not torch.allclose(a, b)
