"""`reasonrl` command line: thin wrappers that parse, validate and call the packages."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _config(args):
    from reasonrl.config import load_config

    return load_config(args.config, args.overrides)


def cmd_train(args) -> int:
    from reasonrl.report import build_report
    from reasonrl.report.summary import print_summary_table
    from reasonrl.trainer.loop import Trainer

    cfg = _config(args)
    if args.resume and cfg.trainer.resume is False:
        cfg.trainer.resume = True
    trainer = Trainer(cfg)
    summary = trainer.run()
    build_report(cfg.run_dir, summary)
    print_summary_table(summary, f"run {cfg.run.name}")
    print(f"run directory: {cfg.run_dir}  (report.html, metrics.jsonl, final/)")
    return 0


def cmd_eval(args) -> int:
    from reasonrl.trainer.loop import Trainer

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.path={args.model}")
    from reasonrl.config import load_config

    cfg = load_config(args.config, overrides + ["trainer.steps=0", "trainer.tensorboard=false"])
    trainer = Trainer(cfg)
    res = trainer.evaluate()
    print(json.dumps(res, indent=1))
    return 0


def cmd_demo(args) -> int:
    from reasonrl.demo import run_demo

    run_demo(args.config, args.overrides, skip_control=args.skip_control)
    return 0


def cmd_config(args) -> int:
    from reasonrl.config import describe_fields, dump_config

    if args.doc:
        print(describe_fields())
        return 0
    print(dump_config(_config(args)))
    return 0


def cmd_algorithms(args) -> int:
    from reasonrl.algorithms.recipes import REGISTRY

    for name in sorted(REGISTRY):
        r = REGISTRY[name]
        print(f"{name:24s} {r.formula}\n{'':24s} paper: {r.paper}")
    return 0


def cmd_models(args) -> int:
    if args.action == "build-default":
        from reasonrl.models.tiny import build_default_model

        print(build_default_model(force=args.force))
    return 0


def cmd_report(args) -> int:
    from reasonrl.report import build_report

    run_dir = Path(args.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    print(build_report(run_dir, summary))
    return 0


# Benchmarks by name -> "module:function"; each function takes (overrides: list[str]) and returns an exit code.
# One line per benchmark, so adding one never touches another's code.
BENCHES = {
    "algorithms": "reasonrl.bench:bench_algorithms",
    "rewards": "reasonrl.rewards.bench_rewards:bench_rewards",
    "throughput": "reasonrl.bench_throughput:bench_throughput",
    "async": "reasonrl.trainer.bench_async:bench_async",
    "latentseek": "reasonrl.testtime.run:bench_latentseek",
    "ttrl": "reasonrl.bench_ttrl:bench_ttrl",
    "ssrl": "reasonrl.ssrl:bench_ssrl",
    "vla": "reasonrl.embodied.bench:run",  # issue 14 (SimpleVLA-RL); moves to reasonrl.bench.vla with the bench package
}


def cmd_latentseek(args) -> int:
    from reasonrl.testtime.run import run_cli

    return run_cli(args.model, args.tasks, args.reward, args.n, args.out, args.overrides)


def cmd_bench(args) -> int:
    import importlib

    mod, _, fn = BENCHES[args.what].partition(":")
    return getattr(importlib.import_module(mod), fn)(args.overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reasonrl", description="Reinforcement learning for reasoning models.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("config", nargs="?", default=None, help="YAML config file (default: built-in defaults)")
        sp.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. optim.lr=1e-5")

    t = sub.add_parser("train", help="run RL training")
    with_config(t)
    t.add_argument("--resume", action="store_true", help="continue from the newest committed checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model on the held-out split")
    with_config(e)
    e.add_argument("--model", default=None, help="model directory (overrides model.path)")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="build/reuse the tiny model, evaluate, RL, evaluate, compare with an SFT control, report")
    with_config(d)
    d.add_argument("--skip-control", action="store_true", help="skip the equal-wall-clock SFT control arm")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="action", required=True)
    cs = csub.add_parser("show", help="print the resolved config")
    with_config(cs)
    cs.add_argument("--doc", action="store_true", help="print every field with its default and description")
    cs.set_defaults(func=cmd_config)

    a = sub.add_parser("algorithms", help="list the registered recipes")
    a.set_defaults(func=cmd_algorithms)

    m = sub.add_parser("models", help="model tools")
    m.add_argument("action", choices=["build-default"])
    m.add_argument("--force", action="store_true")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("report", help="rebuild report.html for a run directory")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    ls = sub.add_parser("latentseek", help="LatentSeek test-time latent search vs greedy and majority vote (docs/testtime.md)")
    ls.add_argument("--model", default=None, help="model directory, builtin:tiny (default) or builtin:smollm2")
    ls.add_argument("--tasks", default=None, help="problems: builtin:arith (default), another source, or a file")
    ls.add_argument("--reward", choices=["self", "oracle"], default=None, help="self-reward (default) or oracle (gold answer)")
    ls.add_argument("--n", type=int, default=None, help="number of problems (default 50)")
    ls.add_argument("--out", default=None, help="output directory (default runs/latentseek)")
    ls.add_argument("overrides", nargs="*", help="latentseek.field=value, e.g. latentseek.max_iters=5")
    ls.set_defaults(func=cmd_latentseek)

    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("what", choices=sorted(BENCHES))
    b.add_argument("overrides", nargs="*")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if "=" not in x or x.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:  # overrides written after an option (e.g. `--resume trainer.steps=5`)
        args.overrides = [*getattr(args, "overrides", []), *extra]
    cfg_arg = getattr(args, "config", None)
    if cfg_arg and "=" in cfg_arg and not Path(cfg_arg).exists():
        args.overrides = [cfg_arg, *args.overrides]  # no YAML file given, only overrides
        args.config = None
    from reasonrl.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
