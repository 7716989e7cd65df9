"""Embodied RL (SimpleVLA-RL, arXiv 2509.09674): vision-language-action policies trained by
outcome-reward GRPO in MuJoCo Fetch tasks. See docs/embodied.md.

Layout follows the data: ``envs`` (gymnasium Fetch tasks in worker processes) -> ``rollout``
(trajectories as ``Rollouts`` rows) -> ``stage`` (the rollout stage the trainer calls) -> the
recipes in ``reasonrl.algorithms`` -> ``train`` (thin driver until the restructured trainer lands).
"""

try:  # the trainer's mode registry (restructuring issue); absent on older trees
    from reasonrl.modes import register_mode
except ImportError:
    register_mode = None

if register_mode is not None:
    def _factory(cfg, model, tokenizer, scorer):
        from reasonrl.embodied.stage import make_vla_stage

        return make_vla_stage(cfg, model, tokenizer, scorer)

    register_mode("vla", _factory)
