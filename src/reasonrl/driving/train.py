"""DriveMoE training: expert demonstrations, imitation in two stages, closed-loop episodes, GRPO.

RL choice: GRPO over *sampled flow trajectories*, not over a token head. The policy's action head is
the flow-matching expert; a token head would be a second, coarser head trained only for RL. With
Gaussian noise on every Euler step (``reasonrl.models.flow_head``) the sampler is a Markov chain
whose per-step log-densities are exact and recomputable from the stored chain, so each denoising
step of each policy call is one "token" of the trajectory row: the recipe's per-token ratio is the
per-step likelihood ratio (as in Flow-GRPO), and the embodied learner step
(``reasonrl.embodied.train.grpo_update``: ``make_recipe`` / ``prepare`` / ``loss``) runs unchanged.
Reward: ``crash_weight * 1[no crash] + progress`` per episode; a group = one initial state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from reasonrl.batch import Rollouts
from reasonrl.driving.config import DriveRunConfig
from reasonrl.driving.envs import HORIZON, IMAGE_SIZE, SKILLS, STATE_DIM, VIEWS, DrivePool, expert_demo
from reasonrl.driving.policy import DriveConfig, DrivePolicy
from reasonrl.models import flow_head as fh
from reasonrl.rollout.stage import Collected

DEMO_SEED_BASE = 10_000  # demonstrations; RL initial states are drawn from [0, DEMO_SEED_BASE)
DAGGER_SEED_BASE = 200_000  # DAgger rounds' initial states (below the held-out seed_base)


@dataclass
class DemoData:
    views: torch.Tensor  # (N, 5, H, W) uint8
    state: torch.Tensor  # (N, S)
    waypoints: torch.Tensor  # (N, HORIZON, 2) metres
    view_labels: torch.Tensor  # (N,)
    skill_labels: torch.Tensor  # (N,)
    family: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.state)

    def __add__(self, other: "DemoData") -> "DemoData":
        return DemoData(torch.cat([self.views, other.views]), torch.cat([self.state, other.state]),
                        torch.cat([self.waypoints, other.waypoints]), torch.cat([self.view_labels, other.view_labels]),
                        torch.cat([self.skill_labels, other.skill_labels]), self.family + other.family)

    def save(self, path) -> None:
        np.savez_compressed(path, views=self.views.numpy(), state=self.state.numpy(), waypoints=self.waypoints.numpy(),
                            view_labels=self.view_labels.numpy(), skill_labels=self.skill_labels.numpy(),
                            family=np.array(self.family))

    @classmethod
    def load(cls, path) -> "DemoData":
        z = np.load(path)
        return cls(torch.from_numpy(z["views"]), torch.from_numpy(z["state"]), torch.from_numpy(z["waypoints"]),
                   torch.from_numpy(z["view_labels"]), torch.from_numpy(z["skill_labels"]), z["family"].tolist())


def gather_demos(families: list[str], per_family: int, duration: float, offset: int = 0, log=print) -> DemoData:
    """Successful (crash-free) expert episodes, ``per_family`` per family, flattened to policy-call samples."""
    parts = []
    for fam in families:
        kept, seed = 0, DEMO_SEED_BASE + 1000 * offset
        while kept < per_family and seed < DEMO_SEED_BASE + 1000 * offset + 10 * per_family:
            d = expert_demo(fam, seed, duration)
            seed += 1
            if d.crashed or not len(d.states):
                continue
            kept += 1
            parts.append(d)
        log(f"demos {fam}: {kept} episodes from {seed - DEMO_SEED_BASE - 1000 * offset} seeds")
    cat = lambda a: torch.from_numpy(np.concatenate(a))  # noqa: E731
    return DemoData(cat([d.views for d in parts]), cat([d.states for d in parts]).float(),
                    cat([d.waypoints for d in parts]).float(), cat([d.view_labels for d in parts]),
                    cat([d.skill_labels for d in parts]), [d.family for d in parts for _ in range(len(d.states))])


def build_policy(cfg: DriveRunConfig, data: DemoData | None = None) -> DrivePolicy:
    p = cfg.policy
    if p.path:
        return DrivePolicy.from_pretrained(p.path)
    torch.manual_seed(cfg.train.seed)
    counts = {}
    if data is not None:
        counts = {"view_counts": torch.bincount(data.view_labels, minlength=len(VIEWS)).tolist(),
                  "skill_counts": torch.bincount(data.skill_labels, minlength=len(SKILLS)).tolist()}
    return DrivePolicy(DriveConfig(variant=p.variant, d_model=p.d_model, class_weight_power=p.class_weight_power, n_layers=p.n_layers,
                                   n_moe_layers=min(p.n_moe_layers, p.n_layers), n_views=len(VIEWS),
                                   image_size=IMAGE_SIZE, state_dim=STATE_DIM, horizon=HORIZON, n_skills=len(SKILLS),
                                   moe_top_k=p.moe_top_k, n_shared=p.n_shared, expert_hidden=p.expert_hidden,
                                   flow_steps=p.flow_steps, **counts))


def dagger_inits(cfg: DriveRunConfig, rnd: int) -> list[tuple[str, int]]:
    n = cfg.imitation.dagger_seeds_per_family
    base = DAGGER_SEED_BASE + 10_000 * cfg.train.seed + n * rnd
    return [(f, base + i) for f in cfg.env.families for i in range(n)]


def dagger_data(policy: DrivePolicy, pool: DrivePool, inits: list[tuple[str, int]],
                generator: torch.Generator | None = None) -> DemoData:
    """One DAgger round (Ross et al. 2011): the current policy drives (noise-free); every state it visits
    after the first is labelled with the expert's waypoints and skill from that state
    (``envs.expert_relabel``); the first state of each episode is already covered by the demonstrations."""
    ep = run_episodes(policy, pool, inits, relabel=True, generator=generator)
    live = (torch.arange(pool.max_steps).view(1, -1) < ep.n_calls.view(-1, 1)) & (ep.expert_skill >= 0)
    e, c = live.nonzero(as_tuple=True)
    return DemoData(ep.views[e, c], ep.state[e, c], ep.expert_wp[e, c], ep.view_label[e, c], ep.expert_skill[e, c],
                    [inits[i][0] for i in e.tolist()])


def imitation(policy: DrivePolicy, data: DemoData, cfg: DriveRunConfig, log=print,
              pool: DrivePool | None = None) -> list[dict]:
    """Stage 1 (teacher-forced camera routing) then stage 2 (Gumbel straight-through), AdamW, clip 1.
    With ``imitation.dagger_rounds`` and a ``pool``: after stage 1, each round adds the policy's own
    states relabelled by the expert to the data and trains ``dagger_steps`` more stage-1 steps; stage 2
    then runs on the aggregate."""
    im = cfg.imitation
    g = torch.Generator().manual_seed(cfg.train.seed)
    hist: list[dict] = []
    _fit(policy, data, 1, im.stage1_steps, im.lr, im.batch, g, hist, log)
    for rnd in range(im.dagger_rounds if pool is not None else 0):
        new = dagger_data(policy, pool, dagger_inits(cfg, rnd), g)
        data = data + new
        log(f"DAgger round {rnd + 1}: +{len(new)} relabelled samples, {len(data)} in all")
        _fit(policy, data, 1, im.dagger_steps, im.lr, im.batch, g, hist, log)
    _fit(policy, data, 2, im.stage2_steps, im.lr / 10, im.batch, g, hist, log)
    return hist


def _fit(policy: DrivePolicy, data: DemoData, stage: int, steps: int, lr: float, batch: int, g: torch.Generator,
         hist: list[dict], log) -> None:
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    for s in range(steps):
        idx = torch.randint(0, len(data), (min(batch, len(data)),), generator=g)
        loss, logs = policy.imitation_loss(data.views[idx], data.state[idx], data.waypoints[idx],
                                           data.view_labels[idx], data.skill_labels[idx], stage=stage, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        hist.append({"stage": stage, "samples": len(data), **logs})
        if (s + 1) % max(1, steps // 4) == 0:
            log(f"stage {stage} step {s + 1}/{steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))


def router_report(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> dict:
    """Accuracy, majority-label rate (the bar a router must clear), balanced accuracy (mean per-class
    recall over classes present), per-class recall (None for an absent class) and the confusion matrix
    (rows = label, columns = prediction)."""
    conf = torch.zeros((n_classes, n_classes), dtype=torch.long)
    conf.index_put_((labels.long(), pred.long()), torch.ones(len(labels), dtype=torch.long), accumulate=True)
    support = conf.sum(1)
    recall = [float(conf[c, c] / support[c]) if support[c] else None for c in range(n_classes)]
    present = [r for r in recall if r is not None]
    n = max(1, len(labels))
    return {"acc": float(conf.diag().sum()) / n, "majority_rate": float(support.max()) / n,
            "balanced_acc": sum(present) / max(1, len(present)), "per_class_recall": recall,
            "support": support.tolist(), "confusion": conf.tolist()}


@torch.no_grad()
def open_loop_metrics(policy: DrivePolicy, data: DemoData) -> dict:
    """Router metrics (:func:`router_report`) against the derived labels and waypoint error on held-out
    expert samples."""
    policy.eval()
    ctx, vr = policy.context(data.views, data.state, "argmax")
    out: dict = {}
    if vr is not None:
        out["view_router"] = router_report(vr.idx[:, 0], data.view_labels, len(VIEWS))
        out["view_router_acc"] = out["view_router"]["acc"]
        out["view_majority_rate"] = out["view_router"]["majority_rate"]
    x, _, _ = fh.sample(
        policy.velocity, {"ctx": ctx, "mode": "topk"}, (len(data), policy.config.horizon, 2),
        steps=policy.config.flow_steps, generator=torch.Generator().manual_seed(0))
    out["ade_m"] = float((policy.denormalise(x) - data.waypoints).norm(dim=-1).mean())
    ar = policy.last_action_routing
    if ar is not None:
        out["skill_router"] = router_report(ar.logits.argmax(-1), data.skill_labels, len(SKILLS))
        out["skill_router_acc"] = out["skill_router"]["acc"]
        out["skill_majority_rate"] = out["skill_router"]["majority_rate"]
    return out


# ----------------------------------------------------------------------------------- closed loop
@dataclass
class Episodes:
    inits: list[tuple[str, int]]
    views: torch.Tensor  # (E, C, 5, H, W) uint8
    state: torch.Tensor  # (E, C, S)
    chain: torch.Tensor  # (E, C, steps + 1, H, 2)
    logp: torch.Tensor  # (E, C, steps)
    n_calls: torch.Tensor
    crashed: torch.Tensor
    success: torch.Tensor
    progress: torch.Tensor
    view_choice: torch.Tensor  # (E, C) -1 when not routed
    view_label: torch.Tensor  # (E, C)
    experts: torch.Tensor  # (E, C, k) -1 when dense
    timing: dict[str, float] = field(default_factory=dict)
    expert_wp: torch.Tensor | None = None  # (E, C, H, 2) DAgger relabels (run_episodes(relabel=True))
    expert_skill: torch.Tensor | None = None  # (E, C) -1 where no relabel

    @property
    def env_steps(self) -> int:
        return int(self.n_calls.sum())


def run_episodes(policy: DrivePolicy, pool: DrivePool, inits: list[tuple[str, int]], *, noise: float = 0.0,
                 generator: torch.Generator | None = None, keep_obs: bool = True, relabel: bool = False) -> Episodes:
    """One episode per initial state; one batched policy call per step over every still-running env.
    ``relabel``: also record the expert's waypoints/skill at every visited state but the first (DAgger)."""
    c = policy.config
    e, n_max, steps = len(inits), pool.max_steps, c.flow_steps
    views = torch.zeros((e, n_max if keep_obs else 1, 5, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    state = torch.zeros((e, n_max, c.state_dim))
    chain = torch.zeros((e, n_max, steps + 1, c.horizon, 2))
    logp = torch.zeros((e, n_max, steps))
    n_calls = torch.zeros(e, dtype=torch.long)
    crashed = torch.zeros(e, dtype=torch.bool)
    success = torch.zeros(e, dtype=torch.bool)
    progress = torch.zeros(e)
    vchoice = torch.full((e, n_max), -1, dtype=torch.long)
    vlabel = torch.full((e, n_max), -1, dtype=torch.long)
    experts = torch.full((e, n_max, c.moe_top_k), -1, dtype=torch.long)
    expert_wp = torch.zeros((e, n_max, c.horizon, 2)) if relabel else None
    expert_skill = torch.full((e, n_max), -1, dtype=torch.long) if relabel else None
    t0 = time.perf_counter()
    obs = dict(enumerate(pool.reset(inits)))
    timing = {"env_wall_s": time.perf_counter() - t0, "policy_s": 0.0}
    active = list(range(e))
    was = policy.training
    policy.eval()
    try:
        for k in range(n_max):
            if not active:
                break
            idx = torch.tensor(active)
            v = torch.from_numpy(np.stack([obs[i].views for i in active]))
            s = torch.from_numpy(np.stack([obs[i].state for i in active]))
            if keep_obs:
                views[idx, k] = v
            state[idx, k] = s
            vlabel[idx, k] = torch.tensor([obs[i].view_label for i in active])
            t1 = time.perf_counter()
            wp, ch, lp, info = policy.act(v, s, noise=noise, generator=generator)
            timing["policy_s"] += time.perf_counter() - t1
            chain[idx, k], logp[idx, k] = ch, lp
            if info["view"] is not None:
                vchoice[idx, k] = info["view"]
            if info["experts"] is not None:
                experts[idx, k] = info["experts"]
            t1 = time.perf_counter()
            res = pool.step({i: wp[j].numpy() for j, i in enumerate(active)}, relabel)
            timing["env_wall_s"] += time.perf_counter() - t1
            still = []
            for i in active:
                r = res[i]
                n_calls[i] = k + 1
                crashed[i] = r.crashed
                progress[i] = r.obs.meta["progress"]
                success[i] = r.obs.meta["success"]
                obs[i] = r.obs
                if not r.done:
                    still.append(i)
                    if relabel and k + 1 < n_max:
                        expert_wp[i, k + 1] = torch.from_numpy(r.obs.meta["expert_wp"])
                        expert_skill[i, k + 1] = r.obs.meta["expert_skill"]
            active = still
    finally:
        policy.train(was)
    return Episodes(list(inits), views, state, chain, logp, n_calls, crashed, success, progress, vchoice, vlabel,
                    experts, timing, expert_wp, expert_skill)


def episode_rewards(ep: Episodes, crash_weight: float) -> torch.Tensor:
    return crash_weight * (~ep.crashed).float() + ep.progress


def to_rollouts(ep: Episodes, group_ids: torch.Tensor, crash_weight: float, noise: float) -> Rollouts:
    """One row per episode: each policy call contributes ``flow_steps`` "tokens" (its denoising steps);
    the loss mask covers the calls executed; observations, chains and the sampling noise ride in ``extras``."""
    e, n_max, steps = ep.logp.shape
    width = n_max * steps
    mask = (torch.arange(width).view(1, -1) < (ep.n_calls * steps).view(-1, 1)).long()
    return Rollouts(
        prompt_ids=torch.zeros((e, 1), dtype=torch.long), prompt_mask=torch.ones((e, 1), dtype=torch.long),
        response_ids=torch.zeros((e, width), dtype=torch.long), loss_mask=mask,
        rollout_logp=ep.logp.reshape(e, width) * mask, group_ids=group_ids.clone(), task_index=group_ids.tolist(),
        response_text=[f"{f} seed={s} crashed={int(c)} progress={p:.2f}"
                       for (f, s), c, p in zip(ep.inits, ep.crashed.tolist(), ep.progress.tolist())],
        truncated=torch.zeros(e, dtype=torch.bool), rewards=episode_rewards(ep, crash_weight),
        extras={"drive_views": ep.views, "drive_state": ep.state, "drive_chain": ep.chain,
                "drive_noise": torch.full((e,), float(noise))},
        info={"correct": ep.success.tolist(), "family": [f for f, _ in ep.inits], "seed": [s for _, s in ep.inits]})


def sequence_logprobs(policy: DrivePolicy, batch: Rollouts, noise: float | None = None) -> torch.Tensor:
    """(B, width) per-denoising-step log-probs of the stored chains (``DrivePolicy.sequence_logprobs``)."""
    if noise is not None:
        batch.extras["drive_noise"] = torch.full((len(batch),), float(noise))
    return policy.sequence_logprobs(batch)[0]


class DriveRolloutStage:
    """``collect(n_groups, rng) -> Collected``: ``rollout.n`` noisy-flow episodes per sampled initial state."""

    def __init__(self, policy: DrivePolicy, pool: DrivePool, cfg: DriveRunConfig):
        self.policy, self.pool, self.cfg = policy, pool, cfg

    def load_weights(self, model) -> None:
        self.policy = model

    def sample_inits(self, n_groups: int, rng: torch.Generator | None) -> list[tuple[str, int]]:
        fams = self.cfg.env.families
        f = torch.randint(0, len(fams), (n_groups,), generator=rng).tolist()
        s = torch.randint(0, DEMO_SEED_BASE, (n_groups,), generator=rng).tolist()
        return [(fams[i], int(x)) for i, x in zip(f, s)]

    def collect(self, n_groups: int, rng: torch.Generator | None = None) -> Collected:
        r = self.cfg.rollout
        t0 = time.perf_counter()
        inits = self.sample_inits(n_groups, rng)
        ep = run_episodes(self.policy, self.pool, [i for i in inits for _ in range(r.n)], noise=r.noise, generator=rng)
        gids = torch.arange(n_groups).repeat_interleave(r.n)
        batch = to_rollouts(ep, gids, self.cfg.train.crash_weight, r.noise)
        wall = time.perf_counter() - t0
        metrics = {"reward/mean": float(batch.rewards.mean()), "reward/accuracy": float(ep.success.float().mean()),
                   "episode/crash_rate": float(ep.crashed.float().mean()),
                   "episode/progress": float(ep.progress.mean()), "env/steps": ep.env_steps,
                   "perf/env_steps_per_s": ep.env_steps / max(wall, 1e-9), "time/rollout_s": wall,
                   **{f"time/{k}": v for k, v in ep.timing.items()}}
        return Collected(batch=batch, tasks=[{"family": f, "seed": s} for f, s in inits], metrics=metrics)


def rl_finetune(policy: DrivePolicy, pool: DrivePool, cfg: DriveRunConfig, rng: torch.Generator,
                log=print) -> list[dict]:
    """``train.steps`` GRPO steps: the drive rollout stage collects, the embodied learner step learns."""
    from reasonrl.algorithms.recipes import make_recipe
    from reasonrl.embodied.train import grpo_update

    stage = DriveRolloutStage(policy, pool, cfg)
    recipe = make_recipe(cfg.algorithm)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas), eps=1e-8,
                            weight_decay=cfg.train.weight_decay)
    hist = []
    for step in range(cfg.train.steps):
        col = stage.collect(cfg.rollout.groups_per_step, rng)
        m = dict(col.metrics)
        t0 = time.perf_counter()
        m.update(grpo_update(policy, opt, recipe, col.batch, cfg, step))
        m["time/learner_s"] = time.perf_counter() - t0
        m["train/updates"] = cfg.train.epochs * cfg.train.mini_batches
        m["step"] = step + 1
        hist.append(m)
        log(f"RL step {step + 1}: reward {m['reward/mean']:.3f}, crash {m['episode/crash_rate']:.2f}, "
            f"progress {m['episode/progress']:.2f}, env steps/s {m['perf/env_steps_per_s']:.1f}")
    return hist


def held_out_inits(cfg: DriveRunConfig) -> list[tuple[str, int]]:
    return [(f, cfg.eval.seed_base + i) for f in cfg.env.families for i in range(cfg.eval.seeds_per_family)]


def closed_loop_eval(policy: DrivePolicy, pool: DrivePool, inits: list[tuple[str, int]]) -> dict:
    """Deterministic (noise-free Euler) episodes: per family success / collision / progress, closed-loop
    camera-router accuracy against the simulator-derived view label, expert-usage histogram per family."""
    ep = run_episodes(policy, pool, inits, keep_obs=False)
    fam = np.array([f for f, _ in inits])
    out: dict = {"per_family": {}, "env_steps": ep.env_steps, "timing": ep.timing}
    live = torch.arange(pool.max_steps).view(1, -1) < ep.n_calls.view(-1, 1)
    for f in dict.fromkeys(fam.tolist()):
        sel = torch.from_numpy(fam == f)
        d = {"n": int(sel.sum()), "success": float(ep.success[sel].float().mean()),
             "collision": float(ep.crashed[sel].float().mean()), "progress": float(ep.progress[sel].mean())}
        m = live[sel]
        if (ep.view_choice[sel][m] >= 0).any():
            d["view_router_acc"] = float((ep.view_choice[sel][m] == ep.view_label[sel][m]).float().mean())
            d["view_usage"] = (torch.bincount(ep.view_choice[sel][m], minlength=len(VIEWS)).float() / m.sum()).tolist()
        ex = ep.experts[sel][m]
        if (ex >= 0).any():
            d["expert_usage"] = (torch.bincount(ex.reshape(-1), minlength=len(SKILLS)).float() / ex.numel()).tolist()
        out["per_family"][f] = d
    out["success"] = float(ep.success.float().mean())
    out["collision"] = float(ep.crashed.float().mean())
    out["progress"] = float(ep.progress.mean())
    out["success_vec"] = ep.success.int().tolist()
    out["collision_vec"] = ep.crashed.int().tolist()
    return out


def encoder_savings(policy: DrivePolicy, n: int = 64, repeats: int = 3) -> dict:
    """Measured vision-encoder cost at inference: one routed candidate view vs encoding all four
    (what stage 2 / a dense all-views model pays): images encoded and wall time of ``context``."""
    g = torch.Generator().manual_seed(0)
    views = torch.randint(0, 256, (n, 5, IMAGE_SIZE, IMAGE_SIZE), generator=g, dtype=torch.uint8)
    state = torch.randn(n, STATE_DIM, generator=g)
    res = {}
    with torch.no_grad():
        for mode in ("argmax", "gumbel"):
            policy.encoded_images = 0
            t = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                policy.context(views, state, mode, generator=g)
                t.append(time.perf_counter() - t0)
            res[mode] = {"images_per_call": policy.encoded_images / (repeats * n), "context_s": min(t)}
    res["image_saving"] = 1 - res["argmax"]["images_per_call"] / res["gumbel"]["images_per_call"]
    res["time_ratio_routed_over_all"] = res["argmax"]["context_s"] / res["gumbel"]["context_s"]
    return res
