"""Small shared builders for the embodied tests (a tiny policy, no demonstrations, no training)."""

import numpy as np
import torch

from reasonrl.embodied.actions import ActionTokenizer
from reasonrl.embodied.envs import TASKS
from reasonrl.embodied.policy import VLAConfig, VLAPolicy


def tiny_policy(chunk_len: int = 2, image_size: int = 0, seed: int = 0, **kw) -> tuple[VLAPolicy, ActionTokenizer]:
    torch.manual_seed(seed)
    words = sorted({w for t in TASKS.values() for w in t.instruction.split()})
    cfg = VLAConfig(words=words, chunk_len=chunk_len, n_bins=16, image_size=image_size, d_model=32, n_layer=1,
                    n_head=2, **kw)
    return VLAPolicy(cfg), ActionTokenizer(-np.ones(4), np.ones(4), 16)
