"""A minute-scale learning test: GRPO must raise the held-out reward of a tiny model by a clear margin.

The reward is dense (digits in the response) so an untrained model has mixed-reward groups from the
first step; any silent regression in sampling, log-prob alignment, advantage sign, loss aggregation
or the optimizer step stops the increase. Held-out prompts are the test split, scored greedily."""

from trainer_fixtures import LEARNING_OVERRIDES, heldout_digit_reward, tiny_overrides

from reasonrl.config import load_config
from reasonrl.trainer.loop import Trainer


def test_grpo_raises_heldout_reward(tiny_model_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_model_dir, tmp_path) + LEARNING_OVERRIDES + ["optim.lr=3e-3"])
    tr = Trainer(cfg, log=lambda *a: None)
    before = heldout_digit_reward(tr)
    tr.run()
    after = heldout_digit_reward(tr)
    print("held-out digits per response", before, "->", after)
    assert after > before + 4.0, (before, after)
