"""Checkpoint size and step time: full fine-tuning vs LoRA rank 8 on one model (argv[1], default builtin:tiny),
the same run otherwise. Results: benchmarks/lora/results.md."""
import json
import sys
import tempfile
from pathlib import Path
from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer
model = sys.argv[1] if len(sys.argv) > 1 else "builtin:tiny"
tmp = Path(tempfile.mkdtemp())
def size(d): return sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
for name, extra in [("full", []), ("lora_r8", ["model.lora.rank=8", "model.lora.alpha=16"])]:
    cfg = load_config(None, [f"model.path={model}", f"run.out_dir={tmp}", f"run.name={name}", "run.threads=1",
        "data.eval_size=8", "rollout.n=8", "rollout.max_new_tokens=24", "trainer.prompts_per_step=8", "trainer.steps=2",
        "trainer.save_every=2", "trainer.progress=false", "trainer.tensorboard=false", "eval.k=2", "eval.sampled=false", "reward.functions=[trainer_fixtures:digit_reward]", "reward.correctness=0", *extra])
    tr = Trainer(cfg, log=lambda *a: None)
    tr.run()
    trainable = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in tr.model.parameters())
    rows = [json.loads(x) for x in (tmp / name / "metrics.jsonl").read_text().splitlines()]
    steps = [r["time/step_s"] for r in rows if "time/step_s" in r]
    ck = tmp / name / "checkpoints" / "step_2"
    print(f"{name}: trainable {trainable} of {total} params; checkpoint {size(ck)/1024:.0f} KiB "
          f"(model/ {size(ck/'model')/1024:.0f} KiB, trainer_state.pt {(ck/'trainer_state.pt').stat().st_size/1024:.0f} KiB); "
          f"mean step {sum(steps)/len(steps):.3f} s")
print("load", open("/proc/loadavg").read().strip())
