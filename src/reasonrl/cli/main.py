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

    from reasonrl.trainer.rundir import RunDir

    cfg = _config(args)
    if args.resume and cfg.trainer.resume is False:
        cfg.trainer.resume = True
    if args.overwrite:
        cfg.trainer.overwrite = True
    _state["run_dir"] = cfg.run_dir
    # the lock is taken (and an existing run refused) before the model loads, and held until the
    # report is written
    with RunDir(cfg.run_dir, resume=cfg.trainer.resume, overwrite=cfg.trainer.overwrite) as rd:
        trainer = Trainer(cfg)
        trainer.rundir = rd
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

    overrides = list(args.overrides) + (["trainer.overwrite=true"] if args.overwrite else [])
    if args.config == "vla":  # `reasonrl demo vla`: the embodied (VLA) demo, docs/embodied.md
        from reasonrl.demo_vla import run_vla_demo

        run_vla_demo(overrides)
        return 0
    run_demo(args.config, overrides, skip_control=args.skip_control)
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


def cmd_data(args) -> int:
    from reasonrl.tasks import load_tasks
    from reasonrl.tasks.formats import write_verl_parquet

    tasks = load_tasks(args.source, args.n, split=args.split, seed=args.seed)
    print(f"wrote {len(tasks)} tasks to {write_verl_parquet(tasks, args.out)} (veRL RL parquet)")
    return 0


def cmd_dashboard(args) -> int:
    from reasonrl.dashboard import DashboardError, DashboardServer, export_static

    try:
        if args.export:
            print(f"wrote {export_static([Path(args.runs)], Path(args.export))}")
            return 0
        server = DashboardServer(Path(args.runs), host=args.host, port=args.port)
    except DashboardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this machine can read these runs", file=sys.stderr)
    print(f"reasonrl dashboard for {args.runs}: {server.url}  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 130
    finally:
        server.server_close()
    return 0


def cmd_report(args) -> int:
    from reasonrl.report import build_report

    run_dir = Path(args.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    print(build_report(run_dir, summary))
    return 0


def cmd_latentseek(args) -> int:
    from reasonrl.testtime.run import run_cli

    return run_cli(args.model, args.tasks, args.reward, args.n, args.out, args.overrides)


def cmd_bench(args) -> int:
    from reasonrl.bench import run_bench

    return run_bench(args.what, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reasonrl", description="Reinforcement learning for reasoning models.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("config", nargs="?", default=None, help="YAML config file (default: built-in defaults)")
        sp.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. optim.lr=1e-5")

    t = sub.add_parser("train", help="run RL training")
    with_config(t)
    t.add_argument("--resume", action="store_true", help="continue from the newest committed checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="delete the run already in the run directory and start fresh (default: refuse)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model on the held-out split")
    with_config(e)
    e.add_argument("--model", default=None, help="model directory (overrides model.path)")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="build/reuse the tiny model, evaluate, RL, evaluate, compare with an SFT control, report "
                                    "(`reasonrl demo vla`: one-demo VLA policy on FetchReach, GRPO, episode strips)")
    with_config(d)
    d.add_argument("--skip-control", action="store_true", help="skip the equal-wall-clock SFT control arm")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in the run directory")
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

    da = sub.add_parser("data", help="write tasks out in another framework's format")
    dsub = da.add_subparsers(dest="action", required=True)
    dx = dsub.add_parser("export", help="write a task source (e.g. builtin:arith) as veRL RL parquet")
    dx.add_argument("source", help="builtin:<family>, reasoning_gym:<name> or a data file")
    dx.add_argument("out", help="output .parquet path")
    dx.add_argument("--n", type=int, default=1000, help="number of tasks (default 1000; files: 0 = all rows)")
    dx.add_argument("--split", default="train", help="train or test (default train)")
    dx.add_argument("--seed", type=int, default=0)
    dx.set_defaults(func=cmd_data)

    db = sub.add_parser("dashboard", help="live web page over run directories (plots, distributions, samples)")
    db.add_argument("runs", nargs="?", default="runs", help="a runs folder or one run directory (default: runs)")
    db.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    db.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    db.add_argument("--export", default=None, metavar="HTML", help="write a static snapshot page instead of serving")
    db.set_defaults(func=cmd_dashboard)

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

    from reasonrl.bench import BENCHES

    b = sub.add_parser("bench", help="benchmarks (reasonrl/bench/, results in benchmarks/<name>/)")
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
    debug = args.debug or os.environ.get("REASONRL_DEBUG") == "1"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # the checkpoint protocol keeps committed state consistent at any instant; the finally
        # blocks on the way here stopped the helpers and released the run-directory lock
        if debug:
            raise
        print(f"\ninterrupted (Ctrl-C); {_resume_hint(_state.get('run_dir'))}", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        print("(run with `reasonrl --debug ...` for the traceback)", file=sys.stderr)
        return 2
    except Exception as e:
        from reasonrl.trainer.checkpoint import _disk_full

        if debug or not _disk_full(e):
            raise
        print(f"error: No space left on device ({e.__class__.__name__}: {e}); free disk space or move "
              "run.out_dir to a larger disk, then continue with `--resume`", file=sys.stderr)
        print("(run with `reasonrl --debug ...` for the traceback)", file=sys.stderr)
        return 2


_state: dict[str, object] = {}


def _resume_hint(run_dir) -> str:
    """Where an interrupted run stands: committed checkpoints are consistent at any instant."""
    if run_dir is None:
        return "stopped"
    from reasonrl.trainer.checkpoint import latest_committed

    ck = latest_committed(Path(run_dir) / "checkpoints", verify=False)
    if ck is None:
        return (f"no checkpoint was committed yet in {run_dir}; start again with `--overwrite` "
                "(trainer.save_every sets how often checkpoints are written)")
    return f"the last committed checkpoint is {ck}; continue with `reasonrl train ... --resume`"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Failures the user causes and fixes (bad config, data, model path, run directory, a full
    disk): one message that names the cause and the fix, no traceback. Anything else is a bug and
    keeps its traceback."""
    from reasonrl.config import ConfigError
    from reasonrl.models.loading import ModelLoadError
    from reasonrl.rewards.sandbox import SandboxUnavailable
    from reasonrl.rewards.scorer import RewardFunctionError, RewardInfrastructureError
    from reasonrl.rollout.native_engine import UnsupportedModelError
    from reasonrl.rollout.vllm_engine import VLLMUnavailableError
    from reasonrl.tasks.files import TaskDataError
    from reasonrl.trainer.checkpoint import CheckpointWriteError, ResumeError
    from reasonrl.trainer.loop import TrainingError
    from reasonrl.trainer.rundir import RunDirError

    return (ConfigError, TaskDataError, ModelLoadError, ResumeError, RunDirError, CheckpointWriteError,
            TrainingError, SandboxUnavailable, RewardFunctionError, RewardInfrastructureError,
            UnsupportedModelError, VLLMUnavailableError)

if __name__ == "__main__":
    sys.exit(main())
