"""``reasonrl bench vla``: one-demo SFT start -> GRPO vs an equal-update imitation control, per seed.

Arms, all scored greedy on the same fixed held-out initial states (``eval.states_per_task`` per task):
- ``start``: behaviour cloning on one scripted demonstration per task plus ``sft.augment`` symmetry copies
  of it (the paper's one-trajectory SFT);
- ``grpo``: ``start`` + ``train.steps`` GRPO steps (rollout stage + recipe);
- ``control``: ``start`` + as many more behaviour-cloning updates on the same demonstrations as GRPO
  made optimizer updates (the equal-budget imitation control: imitation has no use for env steps);
- ``bc10`` (``bench.reference=true``): behaviour cloning on ten demonstrations per task (+ the same number of
  copies each), ``sft.steps`` + the same updates: the stronger imitation reference;
- ``bc10_grpo`` (``bench.reference=true bench.ten_demo_steps=K``): ``bc10`` + K GRPO steps (the ten-demo
  start + RL arm).
Writes ``results.json`` and ``results.md`` (with intervals, env steps/s, the env/policy/learner time
split and the load average) to ``bench.out``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

BENCH_DEFAULTS = [  # FetchReach first, CPU-sized (docs/embodied.md, benchmarks/vla/results.md); overrides win
    "env.tasks=[reach]", "env.max_steps=20", "env.chunk_len=2", "env.n_workers=2", "eval.states_per_task=256",
    "policy.head=gaussian", "policy.min_sigma=0.2", "policy.learn_sigma=false", "sft.augment=5", "sft.steps=100",
    "train.steps=32", "rollout.groups_per_step=16", "rollout.max_rounds=2", "train.epochs=4", "train.mini_batches=2",
    "train.lr=3e-4",
]


def _wilson(p: float, n: int) -> list[float]:
    from reasonrl.eval.metrics import wilson_interval

    return list(wilson_interval(round(p * n), n))


def _arm(success: torch.Tensor, inits) -> dict:
    n = len(success)
    p = float(success.float().mean())
    return {"success": p, "ci95": _wilson(p, n), "n": n, "per_task": {
        t: float(success[torch.tensor([x == t for x, _ in inits])].float().mean()) for t in dict.fromkeys(x for x, _ in inits)}}


def run_seed(cfg, seed: int, reference: bool, log=print, strips: Path | None = None, ten_demo_steps: int = 0) -> dict:
    from reasonrl.embodied import train as T
    from reasonrl.embodied.envs import EnvPool
    from reasonrl.eval.metrics import paired_comparison

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
    inits = T.held_out_inits(cfg)
    out: dict = {"seed": seed}
    with EnvPool(cfg.env.n_workers, cfg.env.image_size, cfg.env.max_steps) as pool:
        demos = T.sft_demos(cfg, 1, offset=seed)
        policy, tok = T.build_policy(cfg, demos)
        rows = T.demo_rollouts(demos, policy, tok, cfg.env.max_steps)
        t0 = time.perf_counter()
        T.sft(policy, rows, cfg.sft.steps, T.make_optimizer(policy, cfg.sft.lr, cfg), cfg)
        out["sft_s"] = time.perf_counter() - t0
        start = copy.deepcopy(policy.state_dict())
        ev = {}
        _, tr = T.evaluate(policy, pool, tok, inits)
        ev["start"] = tr.success
        if strips is not None:
            _strip(policy, tok, cfg, inits, strips / f"seed{seed}_start.png")
        log(f"seed {seed}: start success {float(tr.success.float().mean()):.3f}")

        t0 = time.perf_counter()
        hist = T.rl_loop(policy, tok, pool, cfg, torch.Generator().manual_seed(seed), log)
        out["grpo_wall_s"] = time.perf_counter() - t0
        _, tr = T.evaluate(policy, pool, tok, inits)
        ev["grpo"] = tr.success
        if strips is not None:
            _strip(policy, tok, cfg, inits, strips / f"seed{seed}_grpo.png")
        updates = int(sum(h["train/updates"] for h in hist))
        env_steps = int(sum(h["env/steps"] for h in hist))
        rollout_s = sum(h["time/rollout_s"] for h in hist)
        out["grpo"] = {"updates": updates, "env_steps": env_steps, "env_steps_per_s": env_steps / max(rollout_s, 1e-9),
                       "time_split_s": {"env": sum(h["time/env_wall_s"] for h in hist),
                                        "policy": sum(h["time/policy_s"] for h in hist),
                                        "learner": sum(h["time/learner_s"] for h in hist)},
                       "sampled_success_by_step": [round(h["reward/accuracy"], 4) for h in hist],
                       "kept_groups_by_step": [h["batch/kept_groups"] for h in hist]}
        log(f"seed {seed}: GRPO success {float(tr.success.float().mean()):.3f} after {updates} updates, {env_steps} env steps")

        policy.load_state_dict(start)
        t0 = time.perf_counter()
        T.sft(policy, rows, updates, T.make_optimizer(policy, cfg.sft.lr, cfg), cfg)
        out["control_s"] = time.perf_counter() - t0
        _, tr = T.evaluate(policy, pool, tok, inits)
        ev["control"] = tr.success
        log(f"seed {seed}: control success {float(tr.success.float().mean()):.3f}")

        if reference:
            demos10 = T.sft_demos(cfg, 10, offset=seed)
            ref, _ = T.build_policy(cfg, demos10)
            T.sft(ref, T.demo_rollouts(demos10, ref, tok, cfg.env.max_steps), cfg.sft.steps + updates,
                  T.make_optimizer(ref, cfg.sft.lr, cfg), cfg)
            _, tr = T.evaluate(ref, pool, tok, inits)
            ev["bc10"] = tr.success
            log(f"seed {seed}: 10-demo BC success {float(tr.success.float().mean()):.3f}")
            if ten_demo_steps:  # the ten-demo start + GRPO arm (the paper's full-data row, scaled down)
                cfg10 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": ten_demo_steps})})
                t0 = time.perf_counter()
                h10 = T.rl_loop(ref, tok, pool, cfg10, torch.Generator().manual_seed(seed + 1), log)
                out["bc10_grpo"] = {"steps": ten_demo_steps, "wall_s": time.perf_counter() - t0,
                                    "updates": int(sum(h["train/updates"] for h in h10)),
                                    "env_steps": int(sum(h["env/steps"] for h in h10)),
                                    "kept_groups_by_step": [h["batch/kept_groups"] for h in h10]}
                _, tr = T.evaluate(ref, pool, tok, inits)
                ev["bc10_grpo"] = tr.success
                log(f"seed {seed}: 10-demo BC + GRPO success {float(tr.success.float().mean()):.3f}")
    out["arms"] = {k: _arm(v, inits) for k, v in ev.items()}
    out["paired"] = {**paired_comparison(ev["start"].tolist(), ev["grpo"].tolist(), "grpo_vs_start"),
                     **paired_comparison(ev["control"].tolist(), ev["grpo"].tolist(), "grpo_vs_control")}
    return out


def _strip(policy, tok, cfg, inits, path: Path) -> None:
    """The first held-out episodes rendered as a PNG strip (and GIF) next to the results."""
    from reasonrl.embodied.episodes import record_episodes, save_strip

    n = cfg.eval.strip_episodes
    if n:
        save_strip(record_episodes(policy, tok, inits[:n], cfg.env.max_steps, cfg.eval.strip_size), path)


def _markdown(res: dict) -> str:
    arms = list(res["seeds"][0]["arms"])
    lines = ["# reasonrl bench vla: one-demo SFT start -> GRPO vs imitation control (FetchReach first)", "",
             f"Command: `{res['command']}`", "",
             f"Load average before / after: {res['loadavg_before']} / {res['loadavg_after']} (2 shared cores).", "",
             "Settings: " + ", ".join(f"{k}" for k in res.get("defaults", [])) + ".", "",
             "Arms: start = BC on 1 demo (+ its symmetry copies); grpo = start + GRPO; control = start + as many "
             "more BC updates on the same data as GRPO made; bc10 = BC on 10 demos (+ copies), same total updates "
             "(reference); bc10_grpo = bc10 + GRPO (bench.ten_demo_steps steps).", "",
             "Held-out greedy success on fixed initial states (Wilson 95% interval):", "",
             "| seed | " + " | ".join(arms) + " | GRPO - start | GRPO - control | updates | env steps | env steps/s | env / policy / learner s |",
             "|---" * (len(arms) + 7) + "|"]
    for s in res["seeds"]:
        a = s["arms"]
        cells = [f"{a[k]['success']:.3f} [{a[k]['ci95'][0]:.2f}, {a[k]['ci95'][1]:.2f}]" for k in arms]
        g = s["grpo"]
        ts = g["time_split_s"]
        lines.append(f"| {s['seed']} | " + " | ".join(cells) +
                     f" | {a['grpo']['success'] - a['start']['success']:+.3f} | {a['grpo']['success'] - a['control']['success']:+.3f}"
                     f" | {g['updates']} | {g['env_steps']} | {g['env_steps_per_s']:.0f} | "
                     f"{ts['env']:.0f} / {ts['policy']:.0f} / {ts['learner']:.0f} |")
    m = res["mean"]
    lines.append("")
    for s in res["seeds"]:
        lines.append(f"- seed {s['seed']}: sampled (T={res['config']['rollout']['temperature']}) success by GRPO step "
                     f"{s['grpo']['sampled_success_by_step']}; GRPO wall {s['grpo_wall_s']:.0f} s; paired sign test "
                     f"vs start: {s['paired']['grpo_vs_start_fixed']} states fixed / {s['paired']['grpo_vs_start_broke']} "
                     f"broken, p {s['paired']['grpo_vs_start_sign_p']:.2g}; vs control: "
                     f"{s['paired']['grpo_vs_control_fixed']} / {s['paired']['grpo_vs_control_broke']}, "
                     f"p {s['paired']['grpo_vs_control_sign_p']:.2g}")
    lines += ["", f"Mean over seeds: " + ", ".join(f"{k} {m[k]:.3f}" for k in arms) +
              f"; GRPO - start {m['grpo'] - m['start']:+.3f}; GRPO - control {m['grpo'] - m['control']:+.3f}.", ""]
    return "\n".join(lines)


def run(overrides: list[str]) -> int:
    """Entry of ``reasonrl bench vla [bench.seeds=0,1,2] [bench.reference=true] [bench.out=DIR] [cfg overrides]``."""
    from reasonrl.embodied.config import load_vla_config
    from reasonrl.threads import apply_thread_policy

    bench = {k.split("=", 1)[0][6:]: k.split("=", 1)[1] for k in overrides if k.startswith("bench.")}
    unknown = set(bench) - {"seeds", "reference", "out", "config", "ten_demo_steps"}
    if unknown:
        raise SystemExit(f"unknown bench option(s) {sorted(unknown)}; valid: bench.seeds, bench.reference, bench.out, "
                         "bench.config, bench.ten_demo_steps")
    rest = [o for o in overrides if not o.startswith("bench.")]
    cfg = load_vla_config(bench.get("config"), BENCH_DEFAULTS + rest)
    seeds = [int(x) for x in bench.get("seeds", "0").split(",")]
    out = Path(bench.get("out", "benchmarks/vla"))
    out.mkdir(parents=True, exist_ok=True)
    apply_thread_policy(int(os.environ.get("REASONRL_THREADS", "1")))
    res = {"command": "reasonrl bench vla " + " ".join(overrides), "defaults": BENCH_DEFAULTS, "config": cfg.model_dump(),
           "loadavg_before": open("/proc/loadavg").read().split()[:3], "seeds": []}
    for seed in seeds:
        res["seeds"].append(run_seed(cfg, seed, bench.get("reference", "false").lower() == "true",
                                     strips=out / "episodes" if seed == seeds[0] else None,
                                     ten_demo_steps=int(bench.get("ten_demo_steps", 0))))
        res["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        res["mean"] = {k: sum(s["arms"][k]["success"] for s in res["seeds"]) / len(res["seeds"])
                       for k in res["seeds"][0]["arms"]}
        (out / "results.json").write_text(json.dumps(res, indent=1))
        (out / "results.md").write_text(_markdown(res))  # rewritten after every seed: partial runs still report
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
