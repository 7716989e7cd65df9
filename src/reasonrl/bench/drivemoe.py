"""``reasonrl bench drivemoe``: dense vs vision-MoE vs vision+action-MoE, each with and without RL.

Per training seed: expert demonstrations (offset by the seed), then for every variant: two-stage
imitation, open-loop router accuracy on held-out expert samples, closed-loop evaluation on fixed
held-out seeds per family (deterministic Euler sampling), GRPO fine-tuning over noisy flow chains,
and the closed-loop evaluation again. The expert driver is evaluated on the same held-out seeds as a
reference. Writes ``results.json`` / ``results.md`` through :class:`reasonrl.bench.results.BenchRun`
after every seed (a partial run still reports).

Options: ``bench.seeds=0,1,2``, ``bench.variants=dense,vision_moe,full_moe``, ``bench.rl=true``,
``bench.expert=true``, ``bench.out=DIR``, ``bench.config=YAML``; any ``section.field=value`` of the
drive config (``reasonrl.driving.config``).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import torch

from reasonrl.bench.results import BenchRun, env_markdown, mean_t_ci

_OPTIONS = {"seeds", "variants", "rl", "expert", "out", "config"}


def _wilson(k: int, n: int) -> list[float]:
    from reasonrl.eval.metrics import wilson_interval

    return [round(x, 3) for x in wilson_interval(k, n)]


def expert_reference(cfg, inits) -> dict:
    from reasonrl.driving.envs import SUCCESS_PROGRESS, expert_demo

    out: dict = {}
    for fam in dict.fromkeys(f for f, _ in inits):
        demos = [expert_demo(f, s, cfg.env.duration) for f, s in inits if f == fam]
        ok = [(not d.crashed) and d.progress >= SUCCESS_PROGRESS for d in demos]
        out[fam] = {"n": len(demos), "success": float(np.mean(ok)), "collision": float(np.mean([d.crashed for d in demos])),
                    "progress": float(np.mean([d.progress for d in demos]))}
    return out


def run_seed(cfg, seed: int, variants: list[str], rl: bool, log=print) -> dict:
    from reasonrl.driving import train as T
    from reasonrl.driving.envs import DrivePool

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
    t0 = time.perf_counter()
    data = T.gather_demos(cfg.env.families, cfg.imitation.demos_per_family, cfg.env.duration, offset=seed, log=log)
    held = T.gather_demos(cfg.env.families, 8, cfg.env.duration, offset=90 + seed, log=log)
    out: dict = {"seed": seed, "demo_samples": len(data), "demo_s": time.perf_counter() - t0,
                 "view_label_counts": torch.bincount(data.view_labels, minlength=4).tolist(),
                 "skill_label_counts": torch.bincount(data.skill_labels, minlength=5).tolist(), "arms": {}}
    inits = T.held_out_inits(cfg)
    with DrivePool(cfg.env.n_workers, cfg.env.duration) as pool:
        for variant in variants:
            vcfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"variant": variant})})
            policy = T.build_policy(vcfg, data)
            t1 = time.perf_counter()
            hist = T.imitation(policy, data, vcfg, log=lambda m: None, pool=pool)
            arm: dict = {"params": sum(p.numel() for p in policy.parameters()), "imitation_s": time.perf_counter() - t1,
                         "imitation_samples": hist[-1]["samples"] if hist else len(data),
                         "fm_last": float(np.mean([h["fm"] for h in hist[-20:]])), **T.open_loop_metrics(policy, held)}
            if variant != "dense":
                arm["encoder"] = T.encoder_savings(policy)
            ev = T.closed_loop_eval(policy, pool, inits)
            out["arms"][variant] = {**arm, "eval": ev}
            log(f"seed {seed} {variant}: success {ev['success']:.3f} collision {ev['collision']:.3f} "
                f"progress {ev['progress']:.3f} (ade {arm['ade_m']:.2f} m)")
            if rl:
                rl_policy = copy.deepcopy(policy)
                t1 = time.perf_counter()
                h = T.rl_finetune(rl_policy, pool, vcfg, torch.Generator().manual_seed(seed), log=log)
                ev = T.closed_loop_eval(rl_policy, pool, inits)
                out["arms"][variant + "+rl"] = {"rl_s": time.perf_counter() - t1, "eval": ev,
                                                "rl_history": [{k: v for k, v in m.items() if isinstance(v, (int, float))}
                                                               for m in h],
                                                **T.open_loop_metrics(rl_policy, held)}
                log(f"seed {seed} {variant}+rl: success {ev['success']:.3f} collision {ev['collision']:.3f} "
                    f"progress {ev['progress']:.3f}")
    return out


def summarise(res: dict) -> dict:
    arms = list(res["seeds"][0]["arms"])
    summ = {}
    for a in arms:
        d = {}
        for key in ("success", "collision", "progress"):
            m, hw = mean_t_ci([s["arms"][a]["eval"][key] for s in res["seeds"] if a in s["arms"]])
            d[key] = [round(m, 4), round(hw, 4) if hw == hw else None]
        vecs = [s["arms"][a]["eval"]["success_vec"] for s in res["seeds"] if a in s["arms"]]
        k, n = sum(map(sum, vecs)), sum(map(len, vecs))
        d["success_pooled_wilson95"] = _wilson(k, n)
        for r in ("view_router", "skill_router"):
            reps = [s["arms"][a][r] for s in res["seeds"] if r in s["arms"].get(a, {})]
            if reps:
                for key in ("acc", "majority_rate", "balanced_acc"):
                    m, hw = mean_t_ci([x[key] for x in reps])
                    d[f"{r}_{key}"] = [round(m, 4), round(hw, 4) if hw == hw else None]
        fams = res["seeds"][0]["arms"][a]["eval"]["per_family"]
        d["per_family"] = {f: {key: round(float(np.mean([s["arms"][a]["eval"]["per_family"][f][key] for s in res["seeds"]
                                                          if a in s["arms"]])), 4)
                               for key in ("success", "collision", "progress")} for f in fams}
        summ[a] = d
    return summ


def _markdown(doc: dict) -> str:
    res = doc
    arms = list(res["seeds"][0]["arms"])
    fams = list(res["seeds"][0]["arms"][arms[0]]["eval"]["per_family"])
    lines = ["# reasonrl bench drivemoe: dense vs vision-MoE vs vision+action-MoE, with and without GRPO", "",
             f"Command: `{res['command']}`", "", env_markdown(res.get("env")), "",
             f"Sizes (scaled down for a 2-core machine shared by 6 jobs): {res['sizes']}", "",
             "## Closed loop, held-out seeds (mean over training seeds; +- 95% t half-width; pooled Wilson 95% for success)", "",
             "| arm | success | collision | progress | success pooled 95% |", "|---|---|---|---|---|"]
    for a in arms:
        s = res["summary"][a]
        f = lambda v: f"{v[0]:.3f}" + (f" +- {v[1]:.3f}" if v[1] is not None else "")  # noqa: E731
        lines.append(f"| {a} | {f(s['success'])} | {f(s['collision'])} | {f(s['progress'])} | "
                     f"{s['success_pooled_wilson95']} |")
    if res.get("expert"):
        lines += ["", "Expert driver (IDM/MOBIL + give-way) on the same held-out seeds: " + "; ".join(
            f"{k} success {v['success']:.2f}, collision {v['collision']:.2f}, progress {v['progress']:.2f}"
            for k, v in res["expert"].items()), ""]
    lines += [f"## Per family (mean over {len(res['seeds'])} training seed(s))", "",
              "| arm | " + " | ".join(f"{f} success / collision / progress" for f in fams) + " |",
              "|---" * (len(fams) + 1) + "|"]
    s0 = res["seeds"][0]
    for a in arms:
        pf = res["summary"][a]["per_family"]
        lines.append(f"| {a} | " + " | ".join(
            f"{pf[f]['success']:.2f} / {pf[f]['collision']:.2f} / {pf[f]['progress']:.2f}" for f in fams) + " |")
    lines += ["", "## Routers, open loop on held-out expert samples (mean over training seeds +- 95% t half-width)", "",
              "| arm | view acc | view majority rate | view balanced acc | skill acc | skill majority rate | skill balanced acc |",
              "|---|---|---|---|---|---|---|"]
    for a in arms:
        s = res["summary"][a]
        if "view_router_acc" not in s:
            continue
        f = lambda k: (f"{s[k][0]:.3f}" + (f" +- {s[k][1]:.3f}" if s[k][1] is not None else "")) if k in s else "-"  # noqa: E731
        lines.append(f"| {a} | " + " | ".join(f(f"{r}_{k}") for r in ("view_router", "skill_router")
                                             for k in ("acc", "majority_rate", "balanced_acc")) + " |")
    from reasonrl.driving.envs import SKILLS, VIEWS

    lines += ["", f"Per-class recall and confusion (rows = label, columns = prediction), seed {s0['seed']}:", ""]
    for a in arms:
        for r, names in (("view_router", VIEWS), ("skill_router", SKILLS)):
            if r in s0["arms"][a] and not a.endswith("+rl"):
                x = s0["arms"][a][r]
                rec = ", ".join(f"{n} {v:.2f} (n={c})" if v is not None else f"{n} - (n=0)"
                                for n, v, c in zip(names, x["per_class_recall"], x["support"]))
                lines.append(f"- {a} {r}: recall {rec}; confusion {x['confusion']}")
    lines += ["", "## Routers (seed " + str(s0["seed"]) + ")", "",
              "Open loop on held-out expert samples (majority-class rate in brackets); closed-loop camera-router accuracy "
              "against the simulator-derived label per family.", "",
              "| arm | view router acc | skill router acc | ADE (m) | closed-loop view acc per family |", "|---|---|---|---|---|"]
    for a in arms:
        x = s0["arms"][a]
        v = f"{x['view_router_acc']:.3f} ({x['view_majority_rate']:.3f})" if "view_router_acc" in x else "-"
        k = f"{x['skill_router_acc']:.3f} ({x['skill_majority_rate']:.3f})" if "skill_router_acc" in x else "-"
        cl = ", ".join(f"{f} {x['eval']['per_family'][f]['view_router_acc']:.2f}" for f in fams
                       if "view_router_acc" in x["eval"]["per_family"][f]) or "-"
        lines.append(f"| {a} | {v} | {k} | {x['ade_m']:.2f} | {cl} |")
    lines += ["", "## Usage histograms per family (seed " + str(s0["seed"]) + ", closed loop)", ""]

    for a in arms:
        pf = s0["arms"][a]["eval"]["per_family"]
        for f in fams:
            if "view_usage" in pf[f]:
                lines.append(f"- {a} / {f}: views " + ", ".join(f"{n} {u:.2f}" for n, u in zip(VIEWS, pf[f]["view_usage"]))
                             + ("; experts " + ", ".join(f"{n} {u:.2f}" for n, u in zip(SKILLS, pf[f]["expert_usage"]))
                                if "expert_usage" in pf[f] else ""))
    ev0 = [s0["arms"][a]["eval"] for a in arms]
    n_ep = sum(sum(f["n"] for f in e["per_family"].values()) for e in ev0)
    env_s = sum(e["timing"]["env_wall_s"] for e in ev0)
    pol_s = sum(e["timing"]["policy_s"] for e in ev0)
    lines += ["", f"Closed-loop evaluation cost (seed {s0['seed']}, all arms): {(env_s + pol_s) / max(1, n_ep):.2f} s per "
              f"episode ({env_s / max(1, n_ep):.2f} s simulator + rendering, {pol_s / max(1, n_ep):.2f} s policy), "
              f"{sum(e['env_steps'] for e in ev0) / max(1, n_ep):.1f} policy calls per episode."]
    enc = next((s0["arms"][a]["encoder"] for a in arms if "encoder" in s0["arms"][a]), None)
    if enc:
        lines += ["", f"Vision compute at inference: {enc['argmax']['images_per_call']:.0f} images encoded per call "
                  f"with the camera router vs {enc['gumbel']['images_per_call']:.0f} when all candidates are encoded "
                  f"({enc['image_saving']:.0%} fewer encoder inputs); measured context time ratio routed / all = "
                  f"{enc['time_ratio_routed_over_all']:.2f} (batch 64, same process, one thread)."]
    lines.append("")
    return "\n".join(lines)


def bench_drivemoe(overrides: list[str]) -> int:
    from reasonrl.config import load_config
    from reasonrl.driving import train as T
    from reasonrl.driving.config import load_drive_config
    from reasonrl.threads import apply_thread_policy

    run = BenchRun("drivemoe", overrides)
    bench = {k.split("=", 1)[0][6:]: k.split("=", 1)[1] for k in overrides if k.startswith("bench.")}
    unknown = set(bench) - _OPTIONS
    if unknown:
        raise SystemExit(f"unknown bench option(s) {sorted(unknown)}; valid: " + ", ".join(f"bench.{o}" for o in sorted(_OPTIONS)))
    cfg = load_drive_config(bench.get("config"), [o for o in overrides if not o.startswith("bench.")],
                            trainer_config_loader=load_config)
    seeds = [int(x) for x in bench.get("seeds", "0").split(",")]
    variants = bench.get("variants", "dense,vision_moe,full_moe").split(",")
    rl = bench.get("rl", "true").lower() == "true"
    out = Path(bench.get("out", "benchmarks/drivemoe"))
    out.mkdir(parents=True, exist_ok=True)
    apply_thread_policy(int(os.environ.get("REASONRL_THREADS", "1")))
    sizes = (f"{len(cfg.env.families)} families x {cfg.eval.seeds_per_family} held-out seeds, "
             f"{cfg.env.duration:.0f} s episodes; {cfg.imitation.demos_per_family} expert episodes per family; imitation "
             f"{cfg.imitation.stage1_steps}+{cfg.imitation.stage2_steps} steps of {cfg.imitation.batch}, "
             f"{cfg.imitation.dagger_rounds} DAgger rounds x {cfg.imitation.dagger_seeds_per_family} episodes per family "
             f"+ {cfg.imitation.dagger_steps} steps; "
             f"GRPO {cfg.train.steps if rl else 0} steps x {cfg.rollout.groups_per_step} groups x {cfg.rollout.n} episodes; "
             f"{len(seeds)} training seed(s)")
    doc: dict = {"config": cfg.model_dump(), "sizes": sizes, "seeds": []}
    if bench.get("expert", "true").lower() == "true":
        doc["expert"] = expert_reference(cfg, T.held_out_inits(cfg))
        print("expert:", doc["expert"])
    for seed in seeds:
        doc["seeds"].append(run_seed(cfg, seed, variants, rl))
        doc["summary"] = summarise(doc)
        run.write(out, doc, _markdown)
    print((out / "results.md").read_text())
    return 0
