"""Embodied RL (SimpleVLA-RL, arXiv 2509.09674): vision-language-action policies trained by
outcome-reward GRPO in MuJoCo Fetch tasks. See docs/embodied.md.

Layout follows the data: ``envs`` (gymnasium Fetch tasks in worker processes) -> ``rollout``
(trajectories as ``Rollouts`` rows) -> ``stage`` (the rollout stage the trainer calls) -> the
recipes in ``reasonrl.algorithms`` -> ``train`` (thin driver). The ``vla`` mode is registered lazily in ``reasonrl.modes``.
"""
