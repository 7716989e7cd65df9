"""The built-in default model: tokenizer + small Llama trained from scratch, warm-started by SFT.

Built once per spec and cached in Hugging Face format; every later run loads it through
``from_pretrained`` like any user checkpoint. The SFT warm start uses a *fixed, small* pool of worked
demonstrations (the demo's premise: demonstrations are scarce, verifiable prompts are plentiful) and
keeps the checkpoint with the best greedy pass@1 on a validation slice of the training stream (never
the test split).

The build must give the same weights on every machine: 1,400 SFT steps through a phase transition amplify
any rounding difference into a different model (one outside build reached validation pass@1 0.435 where
ours reached 0.68). So the build is step-bounded (never wall-clock), runs in a child process with one
thread, deterministic algorithms and the AVX2 code paths of MKL (``MKL_CBWR``) and ATen
(``ATEN_CPU_CAPABILITY``) pinned, which none of the caller's thread settings or machine load can change, and
the cache key hashes the source of the generators and the build code as well as the spec.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from reasonrl.models.tokenizer import train_tokenizer
from reasonrl.tasks import Task, generate
from reasonrl.tasks.templates import render_prompt
from reasonrl.models.sft import SFTExample, run_sft


@dataclass(frozen=True)
class TinySpec:
    """Everything that determines the built model; its hash names the cache directory."""

    family: str = "arith"
    difficulty: int | None = None
    demos: int = 2000
    vocab_size: int = 256
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    ffn: int = 384
    max_positions: int = 256
    sft_steps: int = 1400
    sft_lr: float = 2e-3
    sft_batch: int = 64
    val_size: int = 200
    eval_every: int = 100
    max_new_tokens: int = 64
    seed: int = 0
    slip_rate: float = 0.0  # arith only: demonstrations from an imperfect teacher (tasks.builtin.slipped_arith_solution)
    direct_rate: float = 0.0  # fraction of demonstrations where the teacher skips its working (tasks.builtin.direct_solution)
    keep: str = "best"  # "best": the checkpoint with the best greedy validation pass@1; "last": the final one


    def __post_init__(self):
        if self.slip_rate and self.family != "arith":
            raise ValueError(f"slip_rate applies to the arith family only, got family {self.family!r}")
        if not 0.0 <= self.direct_rate <= 1.0:
            raise ValueError(f"direct_rate must be in [0, 1], got {self.direct_rate}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")

    def key(self) -> str:
        fields = asdict(self)
        for name, unset in (("slip_rate", 0.0), ("direct_rate", 0.0), ("keep", "best")):
            if fields[name] == unset:  # fields at their default hash as before the fields existed
                fields.pop(name)
        blob = json.dumps({**fields, "code": build_inputs_digest()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


# Source whose code decides the built weights: the task generators (demonstrations and the validation
# slice), prompt templates, the tokenizer trainer and SFT (whole files), and this module's build functions
# (by source, so editing e.g. the variant table below does not invalidate every cached model).
_BUILD_SOURCES = ("tasks/builtin.py", "tasks/code.py", "tasks/knowledge.py", "tasks/templates.py", "tasks/base.py",
                  "models/tokenizer.py", "models/sft.py")
_BUILD_FUNCS = ("TinySpec", "_pool_and_validation", "demo_pool", "sft_examples", "_tokenizer_corpus", "build_model",
                "sft_warm_start", "_build")

# Environment of the build process: one thread and fixed kernel code paths, so the weights do not depend on
# the machine's core count, load or CPU generation (any x86-64 CPU with AVX2).
BUILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE", "MKL_CBWR": "AVX2",
             "ATEN_CPU_CAPABILITY": "avx2", "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false",
             "PYTHONHASHSEED": "0", "REASONRL_THREADS": "1"}


def build_inputs_digest() -> str:
    """sha1 of the code that determines the built weights and of ``BUILD_ENV`` (part of every cache key)."""
    import inspect

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha1(json.dumps(BUILD_ENV, sort_keys=True).encode())
    for rel in _BUILD_SOURCES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    mod = sys.modules[__name__]
    for name in _BUILD_FUNCS:
        h.update(inspect.getsource(getattr(mod, name)).encode())
    return h.hexdigest()[:12]


# Variants that are not a family: ``builtin:tiny-<name>``.
NAMED_VARIANTS: dict[str, dict] = {
    # the demo's start: the default recipe, but its demonstrations come from an imperfect teacher who forgets
    # half of the carries and borrows (tasks.builtin.slipped_arith_solution)
    "imperfect": {"slip_rate": 0.5},
    # the demo's start: a correct teacher who writes out its working on only 40 % of 4,000 problems and gives
    # the bare answer on the rest; the student cannot do three operations in one token, so copying the
    # shortcut makes it wrong (tasks.builtin.direct_solution). Its greedy validation score measures the
    # shortcut, not what the student learned, so the build keeps the final checkpoint and evaluates only it.
    "shortcut": {"demos": 4000, "direct_rate": 0.6, "keep": "last", "eval_every": 1400},
}


def variant_spec(family: str) -> TinySpec:
    """The spec of ``builtin:tiny-<family>``: the default recipe SFT'd on ``family`` with that family's own
    build settings (``FamilySpec.tiny_model``)."""
    from reasonrl.tasks import FAMILIES

    if family in NAMED_VARIANTS:
        return TinySpec(**NAMED_VARIANTS[family])
    if family not in FAMILIES:
        raise ValueError(f"model.path 'builtin:tiny-{family}': no built-in family {family!r}; valid: "
                         f"{', '.join('builtin:tiny-' + f for f in [*FAMILIES, *NAMED_VARIANTS])}")
    return TinySpec(family=family, **FAMILIES[family].tiny_model)


def cache_root() -> Path:
    return Path(os.environ.get("REASONRL_CACHE", Path.home() / ".cache" / "reasonrl"))


def default_model_dir(spec: TinySpec | None = None) -> Path:
    spec = spec or TinySpec()
    return cache_root() / "models" / f"tiny-{spec.key()}"


def _pool_and_validation(spec: TinySpec) -> list[Task]:
    return generate(spec.family, spec.demos + spec.val_size, split="train", seed=spec.seed,
                    difficulty=spec.difficulty, unique=True)


def demo_pool(spec: TinySpec) -> list[Task]:
    """The fixed demonstration pool: the first ``spec.demos`` distinct problems of the seeded training stream,
    with solutions from an imperfect teacher when ``spec.slip_rate`` > 0 and bare answers (no working) on a
    ``spec.direct_rate`` fraction of them; the answers stay the true ones."""
    pool = _pool_and_validation(spec)[: spec.demos]
    if not spec.slip_rate and not spec.direct_rate:
        return pool
    from dataclasses import replace

    from reasonrl.tasks.builtin import direct_solution, slipped_arith_solution

    if spec.slip_rate:
        pool = [replace(t, solution=slipped_arith_solution(t.prompt, spec.slip_rate, t.uid)) for t in pool]
    if spec.direct_rate:
        pool = [replace(t, solution=direct_solution(t, spec.direct_rate)) for t in pool]
    return pool


def validation_tasks(spec: TinySpec) -> list[Task]:
    """Distinct training-split problems after the demo pool (disjoint from demos by construction, from test by split)."""
    return _pool_and_validation(spec)[spec.demos:]


def sft_examples(tasks: list[Task], template: str = "plain", tokenizer=None) -> list[SFTExample]:
    missing = [t.uid for t in tasks if not t.solution]
    if missing:
        raise ValueError(f"{len(missing)} task(s) have no worked solution (e.g. {missing[0]}); SFT needs a `solution` field")
    return [SFTExample(render_prompt(t, template, tokenizer), t.solution) for t in tasks]


def _tokenizer_corpus(spec: TinySpec) -> list[str]:
    texts = []
    for fam in ("arith", "countdown", "linear"):
        for t in generate(fam, 400, split="train", seed=spec.seed + 17):
            texts.append(render_prompt(t, "plain") + (t.solution or ""))
    for t in demo_pool(spec):
        texts.append(render_prompt(t, "plain") + (t.solution or ""))
    return texts


def build_model(spec: TinySpec, tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(spec.seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.ffn,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions, tie_word_embeddings=True, rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(cfg)


def build_default_model(spec: TinySpec | None = None, out_dir: Path | None = None, *, force: bool = False,
                        log=print) -> Path:
    """Build (or reuse) the default model; returns its HF directory.

    The build runs in a child process with ``BUILD_ENV`` (fixed threads and kernels), so the caller's
    thread settings are untouched and two builds of one spec are byte-identical on any machine."""
    spec = spec or TinySpec()
    out = Path(out_dir) if out_dir else default_model_dir(spec)
    if (out / "reasonrl_build.json").exists() and not force:
        return out
    return run_build_process("reasonrl.models.tiny", [json.dumps(asdict(spec)), str(out)], out, log)


def run_build_process(module: str, args: list[str], out: Path, log=print) -> Path:
    """Run ``python -m <module> <args>`` with ``BUILD_ENV``, relaying its output to ``log``; the build must
    write ``out/reasonrl_build.json``. Shared by every built-in model family (transformer, SSM)."""
    pkg_parent = str(Path(__file__).resolve().parent.parent.parent)
    env = {**os.environ, **BUILD_ENV,
           "PYTHONPATH": os.pathsep.join([pkg_parent, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if not line.startswith("Writing model shards"):
            log(line.rstrip())
    if proc.wait() != 0 or not (out / "reasonrl_build.json").exists():
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"building the model {out.name} failed (exit {proc.returncode}):\n{tail}")
    return out


def sft_warm_start(model, tok, spec: TinySpec, engine, log=print):
    """SFT ``model`` on the spec's fixed demonstration pool, evaluating greedy pass@1 on its validation
    slice every ``eval_every`` steps; returns ``(SFTResult, best)`` where ``best`` holds the best
    checkpoint's state, step and score (the caller loads ``best["state"]``). Shared by every built-in
    model family (transformer, SSM), so they are warm-started the same way."""
    from reasonrl.eval.runner import EvalSettings, evaluate
    from reasonrl.rewards import Scorer

    examples = sft_examples(demo_pool(spec))
    val = validation_tasks(spec)
    scorer = Scorer()
    settings = EvalSettings(max_new_tokens=spec.max_new_tokens, sampled=False)
    best = {"score": -1.0, "step": 0, "state": None}

    def eval_fn(step: int):
        r = evaluate(engine, scorer, val, settings)
        best["last"] = (step, r["pass@1"])
        if r["pass@1"] > best["score"]:
            best.update(score=r["pass@1"], step=step, state=copy.deepcopy(model.state_dict()))
        log(f"  sft step {step}: val pass@1 {r['pass@1']:.3f}")
        return r["pass@1"], r

    opt = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, betas=(0.9, 0.99), weight_decay=0.0)
    res = run_sft(model, tok, examples, optimizer=opt, lr=spec.sft_lr, batch_size=spec.sft_batch,
                  steps=spec.sft_steps, warmup=50, schedule="cosine", min_lr_ratio=0.05,
                  seed=spec.seed, eval_fn=eval_fn, eval_every=spec.eval_every)
    if res.steps % spec.eval_every:
        eval_fn(res.steps)
    return res, best


def _build(spec: TinySpec, out: Path, log=print) -> Path:
    """The build itself, in the process ``build_default_model`` starts with ``BUILD_ENV``."""
    from reasonrl.rollout.hf_engine import HFEngine

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    log(f"building the default model {out.name} (tokenizer + {spec.layers}x{spec.hidden} Llama, "
        f"SFT {spec.sft_steps} steps on {spec.demos} demonstrations, a few minutes); cached for later runs")
    tok = train_tokenizer(_tokenizer_corpus(spec), spec.vocab_size)
    model = build_model(spec, tok)
    n_params = sum(p.numel() for p in model.parameters())
    res, best = sft_warm_start(model, tok, spec, HFEngine(model, tok), log)
    if spec.keep == "last":
        best["step"], best["score"] = best["last"]
    else:
        model.load_state_dict(best["state"])
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    weights = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
    meta = {"spec": asdict(spec), "code": build_inputs_digest(), "weights_sha256": weights,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "params": n_params, "sft_steps": res.steps, "sft_seconds": res.seconds,
            "best_step": best["step"], "val_pass@1": best["score"], "build_seconds": time.perf_counter() - t0,
            "evals": [(s, v) for s, v, _ in res.evals]}
    (tmp / "reasonrl_build.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log(f"built {out} in {meta['build_seconds']:.0f}s: {n_params/1e6:.2f}M params, best val pass@1 "
        f"{best['score']:.3f} at SFT step {best['step']}")
    return out


if __name__ == "__main__":  # the isolated build process (see build_default_model)
    _build(TinySpec(**json.loads(sys.argv[1])), Path(sys.argv[2]), log=lambda m: print(m, flush=True))
