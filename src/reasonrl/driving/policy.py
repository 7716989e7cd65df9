"""DriveMoE-style driving policy, scaled down (spec §3.4), saved and loaded in HF format.

Inputs per policy call: the always-encoded ``center`` bird's-eye view, ONE candidate view chosen by
the camera router (``front/rear/left/right``), the ego state and the route goal. Output: a chunk of
``horizon`` ego-frame waypoints from a flow-matching action expert (``reasonrl.models.flow_head``).

Variants (``DriveConfig.variant``), all with the same per-call compute:
- ``dense``: no routers; the second view is always ``front``; dense FFNs in the action expert whose
  hidden width equals the MoE's active width ((moe_top_k + n_shared) x expert_hidden).
- ``vision_moe``: camera router picks the second view; dense action expert.
- ``full_moe``: camera router + skill-routed action MoE in the last ``n_moe_layers`` blocks
  (``reasonrl.models.moe.MoELayer``: n_experts skill experts, top-k, shared expert), one
  trajectory-level routing decision per call taken from the last dense block's hidden states and
  reused by every MoE block (DriveMoE's ``moe_start_layer``).

Camera routing modes: ``teacher`` (stage 1: the label's view is the only one encoded; the router is
trained by its focal loss alone), ``gumbel`` (stage 2: all candidates encoded, hard Gumbel-softmax
straight-through mix, so the action loss trains the router), ``argmax`` (inference: only the chosen
view is encoded; ``self.encoded_images`` counts encoder inputs so the saving is measurable).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from reasonrl.models import flow_head as fh
from reasonrl.models.moe import FFN, MoELayer, Routing, class_weights, focal_loss, route

VARIANTS = ("dense", "vision_moe", "full_moe")


class DriveConfig(PretrainedConfig):
    model_type = "reasonrl_drivemoe"

    def __init__(self, variant: str = "full_moe", d_model: int = 48, n_head: int = 4, n_layers: int = 3,
                 n_moe_layers: int = 2, n_views: int = 4, image_size: int = 48, state_dim: int = 6, horizon: int = 5,
                 n_skills: int = 5, moe_top_k: int = 2, n_shared: int = 1, expert_hidden: int = 48,
                 wp_scale: list[float] | None = None, flow_steps: int = 10, sigma_min: float = fh.SIGMA_MIN,
                 view_counts: list[float] | None = None, skill_counts: list[float] | None = None,
                 router_grad_to_trunk: bool = False, class_weight_power: float = 0.5, **kw):
        if variant not in VARIANTS:
            raise ValueError(f"DriveConfig.variant={variant!r} is unknown; use one of {VARIANTS}")
        self.variant, self.d_model, self.n_head, self.n_layers = variant, d_model, n_head, n_layers
        self.n_moe_layers, self.n_views, self.image_size, self.state_dim = n_moe_layers, n_views, image_size, state_dim
        self.horizon, self.n_skills, self.moe_top_k, self.n_shared = horizon, n_skills, moe_top_k, n_shared
        self.expert_hidden = expert_hidden
        self.wp_scale = list(wp_scale or [64.0, 8.0])  # metres -> [-1, 1] per waypoint axis
        self.flow_steps, self.sigma_min = flow_steps, sigma_min
        self.view_counts = list(view_counts or [1.0] * n_views)  # label counts -> focal class weights
        self.skill_counts = list(skill_counts or [1.0] * n_skills)
        self.router_grad_to_trunk = router_grad_to_trunk  # False: routers read detached features
        self.class_weight_power = class_weight_power  # focal alpha = count^-power (1: DriveMoE, 0.5: tempered)
        self.hidden_size = d_model
        super().__init__(**kw)


class ViewEncoder(nn.Module):
    """48x48 grey BEV window -> 4 tokens (2x2 pooled conv features)."""

    def __init__(self, d: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.proj = nn.Linear(32, d)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (N, H, W) uint8
        x = self.net(img.float().unsqueeze(1) / 255.0 - 0.5)
        return self.proj(x.flatten(2).transpose(1, 2))  # (N, 4, d)


def time_embedding(t: torch.Tensor, d: int) -> torch.Tensor:
    half = d // 2
    freq = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float().view(-1, 1) * 100.0 * freq
    return torch.cat([a.sin(), a.cos()], -1)


class Block(nn.Module):
    """Action-expert block: action tokens attend to [context; action tokens], then an FFN (dense or MoE)."""

    def __init__(self, d: int, n_head: int, ffn: nn.Module):
        super().__init__()
        self.ln1, self.ln_kv, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, n_head, batch_first=True)
        self.ffn = ffn

    def attend(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        kv = self.ln_kv(torch.cat([ctx, x], 1))
        return x + self.attn(self.ln1(x), kv, kv, need_weights=False)[0]


class DrivePolicy(PreTrainedModel):
    config_class = DriveConfig
    base_model_prefix = "drive"

    def __init__(self, config: DriveConfig):
        super().__init__(config)
        c, d = config, config.d_model
        self.encoder = ViewEncoder(d)
        self.view_emb = nn.Embedding(1 + c.n_views, d)
        self.state_proj = nn.Linear(c.state_dim, d)
        self.goal_proj = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.ctx_layer = nn.TransformerEncoderLayer(d, c.n_head, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        if c.variant != "dense":  # DriveMoE's camera router: a learned query over [goal; state; center-view tokens]
            self.router_query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.router_attn = nn.MultiheadAttention(d, c.n_head, batch_first=True)
            self.router_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, c.n_views))
        self.act_in = nn.Linear(2, d)
        self.pos = nn.Parameter(torch.randn(1, c.horizon, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        moe = c.variant == "full_moe"
        self.first_moe = c.n_layers - c.n_moe_layers if moe else c.n_layers
        dense_hidden = (c.moe_top_k + c.n_shared) * c.expert_hidden  # the MoE's active width: matched compute
        self.blocks = nn.ModuleList(
            Block(d, c.n_head, MoELayer(d, c.expert_hidden, c.n_skills, c.moe_top_k, c.n_shared) if i >= self.first_moe
                  else FFN(d, dense_hidden)) for i in range(c.n_layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2))
        self.route_norm = nn.LayerNorm(d)
        self.encoded_images = 0
        self.last_action_routing: Routing | None = None
        self.post_init()

    def _init_weights(self, module):  # keep torch's default initialisation of every module
        pass

    def _router_in(self, x: torch.Tensor) -> torch.Tensor:
        """Router inputs are detached unless ``config.router_grad_to_trunk``: at this scale the lambda = 10
        focal terms otherwise dominate the shared encoder (measured: flow loss 0.065 vs 0.041 dense)."""
        return x if self.config.router_grad_to_trunk else x.detach()

    # ---------------------------------------------------------------------------------- context
    def _encode(self, imgs: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
        self.encoded_images += len(imgs)
        return self.encoder(imgs) + self.view_emb(view_ids).unsqueeze(1)

    def view_logits(self, center_tok: torch.Tensor, goal_tok: torch.Tensor, state_tok: torch.Tensor) -> torch.Tensor:
        """DriveMoE's router sees the goal and the front image; ours also sees the state token (ego and
        neighbour kinematics): the centre window covers +-20 m, the view label looks 40 m out."""
        kv = torch.cat([goal_tok.unsqueeze(1), state_tok.unsqueeze(1), center_tok], 1)
        q = self.router_query.expand(len(kv), -1, -1)
        return self.router_head(self.router_attn(q, kv, kv, need_weights=False)[0][:, 0])

    def context(self, views: torch.Tensor, state: torch.Tensor, view_mode: str = "argmax",
                view_labels: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """(B, 1 + n_views, H, W) uint8 views, (B, S) state -> (context tokens, camera routing or None).
        Only the views the routing mode needs are encoded (see the module docstring)."""
        b = len(views)
        center = self._encode(views[:, 0], torch.zeros(b, dtype=torch.long))
        goal = self.goal_proj(state[:, 3:5])
        state_tok = self.state_proj(state)
        r = None
        if self.config.variant == "dense":
            sel = self._encode(views[:, 1], torch.ones(b, dtype=torch.long))
        else:
            logits = self.view_logits(self._router_in(center), self._router_in(goal), self._router_in(state_tok))
            r = route(logits, 1, mode=view_mode, labels=view_labels, generator=generator)
            if r.dense:  # straight-through: every candidate encoded, mixed with the hard-valued weights
                cand = torch.stack([self._encode(views[:, 1 + v], torch.full((b,), 1 + v)) for v in
                                    range(self.config.n_views)], 1)  # (B, V, 4, d)
                sel = (r.weights.view(b, -1, 1, 1) * cand).sum(1)
            else:
                choice = r.idx[:, 0]
                sel = center.new_zeros(center.shape)
                for v in choice.unique().tolist():
                    rows = (choice == v).nonzero().flatten()
                    sel = sel.index_copy(0, rows, self._encode(views[rows, 1 + v], torch.full((len(rows),), 1 + v)))
        ctx = torch.cat([state_tok.unsqueeze(1), goal.unsqueeze(1), center, sel], 1)
        return self.ctx_layer(ctx), r

    # ---------------------------------------------------------------------------------- action expert
    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Flow velocity for normalised waypoints x (N, H, 2) at times t (N,) given ``cond`` =
        {"ctx": context tokens, "skill": labels for teacher routing or None, "mode": action routing mode}."""
        ctx = cond["ctx"]
        h = self.act_in(x) + self.pos + self.time_mlp(time_embedding(t, self.config.d_model)).unsqueeze(1)
        r = None
        for i, blk in enumerate(self.blocks):
            h = blk.attend(h, ctx)
            if i < self.first_moe:
                h = h + blk.ffn(blk.ln2(h))
                continue
            z = blk.ln2(h)
            if r is None:  # one trajectory-level decision from the observation, shared by every MoE block
                mode = cond.get("mode") or "topk"
                r = blk.ffn.route(self.route_norm(self._router_in(ctx)), mode=mode, labels=cond.get("skill"),
                                  generator=cond.get("generator"))
            h = h + blk.ffn(z, r)
        self.last_action_routing = r
        return self.out(h)

    @property
    def wp_scale(self) -> torch.Tensor:  # from the config, not a buffer: HF loading leaves non-persistent buffers empty
        return torch.tensor(self.config.wp_scale, dtype=torch.float32)

    def normalise(self, wp: torch.Tensor) -> torch.Tensor:
        return (wp / self.wp_scale).clamp(-1, 1)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.wp_scale

    # ---------------------------------------------------------------------------------- training / acting
    def imitation_loss(self, views, state, waypoints, view_labels, skill_labels, *, stage: int,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Stage 1: teacher-forced camera routing, lambda = 10; stage 2: Gumbel straight-through, lambda = 5
        (DriveMoE's loss: FM + lambda_cam Focal(camera) + lambda_act Focal(skill), class-weighted)."""
        c = self.config
        lam = 10.0 if stage == 1 else 5.0
        ctx, vr = self.context(views, state, "teacher" if stage == 1 else "gumbel", view_labels, generator)
        cond = {"ctx": ctx, "skill": None, "mode": "topk"}
        fm = fh.fm_loss(self.velocity, self.normalise(waypoints), cond, sigma_min=c.sigma_min, generator=generator)
        loss, logs = fm, {"fm": float(fm.detach())}
        if vr is not None:
            lv = focal_loss(vr.logits, view_labels, alpha=class_weights(c.view_counts, c.class_weight_power) * c.n_views)
            loss = loss + lam * lv
            logs["view_focal"] = float(lv.detach())
        ar = self.last_action_routing
        if ar is not None:
            la = focal_loss(ar.logits, skill_labels, alpha=class_weights(c.skill_counts, c.class_weight_power) * c.n_skills)
            loss = loss + lam * la
            logs["skill_focal"] = float(la.detach())
        return loss, logs

    @torch.no_grad()
    def act(self, views, state, *, noise: float = 0.0, generator: torch.Generator | None = None):
        """Waypoints in metres (B, H, 2), plus the Euler chain and per-step log-probs (noise > 0: RL sampling)
        and the routing decisions (camera view index, action experts) for metrics."""
        ctx, vr = self.context(views, state, "argmax")
        cond = {"ctx": ctx, "skill": None, "mode": "topk"}
        x, chain, logp = fh.sample(self.velocity, cond, (len(views), self.config.horizon, 2),
                                   steps=self.config.flow_steps, noise=noise, generator=generator)
        info = {"view": vr.idx[:, 0] if vr is not None else None,
                "experts": self.last_action_routing.idx if self.last_action_routing is not None else None}
        return self.denormalise(x), chain, logp, info

    def chain_logprob(self, views, state, chain: torch.Tensor, noise: float) -> torch.Tensor:
        """Per-denoising-step log-probs (B, steps) of stored chains: the GRPO learner's recomputation."""
        ctx, _ = self.context(views, state, "argmax")
        return fh.chain_logprob(self.velocity, chain, {"ctx": ctx, "skill": None, "mode": "topk"}, noise)


    def sequence_logprobs(self, batch, temperature: float = 1.0, with_entropy: bool = False,
                          return_hidden: bool = False, micro_batch: int | None = None):
        """The learner seam (``rollout.logprobs.sequence_logprobs`` calls it): for trajectory rows whose
        response is ``flow_steps`` "tokens" per policy call, the per-step log-probs (B, width) of the chains
        in ``batch.extras["drive_chain"]`` under the current weights, from the stored observations
        (``drive_views``, ``drive_state``) and noise (``drive_noise``). Calls past a row's mask are skipped
        (entries 0). ``temperature`` is unused (exploration is the noise); entropy is the constant of the
        Gaussian, returned as zeros."""
        steps = self.config.flow_steps
        b, width = batch.response_ids.shape
        n_calls = -(-width // steps)
        noise = float(batch.extras["drive_noise"][0])
        live = torch.nn.functional.pad(batch.loss_mask, (0, n_calls * steps - width)).view(b, n_calls, steps)[..., 0]
        rows = live.bool().nonzero()
        out = torch.zeros((b, n_calls, steps))
        if len(rows):
            i, c = rows[:, 0], rows[:, 1]
            lp = self.chain_logprob(batch.extras["drive_views"][i, c], batch.extras["drive_state"][i, c],
                                    batch.extras["drive_chain"][i, c], noise)
            out = out.index_put((i, c), lp)
        lp = out.reshape(b, n_calls * steps)[:, :width]
        ent = torch.zeros_like(lp) if with_entropy else None
        return (lp, ent, None) if return_hidden else (lp, ent)


AutoConfig.register(DriveConfig.model_type, DriveConfig, exist_ok=True)
AutoModel.register(DriveConfig, DrivePolicy, exist_ok=True)
