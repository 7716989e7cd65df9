"""Symmetry copies of reach demonstrations (the one-demo warm start's augmentation) and episode strips."""

import numpy as np
import pytest
import torch

from reasonrl.embodied.experts import Demo
from reasonrl.embodied.train import augment_demos


def _demo(task="reach", calls=3, chunk=2, seed=0):
    rng = np.random.default_rng(seed)
    st = rng.normal(size=(calls, 31)).astype(np.float32)
    st[:, 28:31] = st[:, 25:28] - st[:, 0:3]  # goal - gripper, as envs.state_vector builds it
    act = rng.uniform(-0.5, 0.5, size=(calls, chunk, 4)).astype(np.float32)
    return Demo(task, 7, st, None, act, calls * chunk, True)


def test_copies_rotate_and_scale_about_the_start_consistently():
    d = _demo()
    out = augment_demos([d], copies=5, seed=1)
    assert len(out) == 6 and out[0] is d
    p0 = d.states[0, :3]
    for c in out[1:]:
        np.testing.assert_allclose(c.states[0, :3], p0, atol=1e-5)  # the start is the fixed point
        np.testing.assert_allclose(c.states[:, 28:31], c.states[:, 25:28] - c.states[:, 0:3], atol=1e-5)
        # one scale s for positions and actions: |goal - p0| and |a_xyz| grow by the same factor (no clip here)
        s_pos = np.linalg.norm(c.states[:, 25:28] - p0, axis=1) / np.linalg.norm(d.states[:, 25:28] - p0, axis=1)
        s_act = np.linalg.norm(c.actions[..., :3], axis=-1) / np.linalg.norm(d.actions[..., :3], axis=-1)
        assert np.allclose(s_pos, s_pos[0], rtol=1e-4) and np.allclose(s_act, s_pos[0], rtol=1e-4)
        assert 0.5 <= s_pos[0] <= 1.5
        np.testing.assert_array_equal(c.actions[..., 3], d.actions[..., 3])  # the gripper command is not a vector
        np.testing.assert_array_equal(c.states[:, 3:5], d.states[:, 3:5])
    assert not np.allclose(out[1].states, out[2].states)  # copies differ


def test_only_reach_demos_are_copied_and_zero_copies_is_identity():
    push = _demo("push")
    assert augment_demos([push], copies=4) == [push]
    r = _demo()
    assert augment_demos([r], copies=0) == [r]


def test_strip_frames_episodes_in_rows_with_success_borders():
    from reasonrl.embodied.episodes import GREEN, RED, strip_image

    f = lambda v: np.full((8, 8, 3), v, dtype=np.uint8)  # noqa: E731
    frames = [[f(10), f(20), f(30), f(40), f(50)], [f(60), f(70)]]
    img = strip_image(frames, [True, False], every=2, border=1)
    assert img.shape == (2 * 10, 3 * 10, 3)  # frames 0, 2, 4 of the first episode; 0, 1 of the second
    assert tuple(img[0, 0]) == GREEN and tuple(img[10, 0]) == RED
    assert img[5, 25, 0] == 50 and img[15, 15, 0] == 70  # the last frame is always shown
    assert (img[10:, 20:] == 255).all()  # a shorter episode leaves white space
    with pytest.raises(ValueError, match="no frames"):
        strip_image([[]], [False])


def test_recorded_episodes_become_png_and_gif(tmp_path):
    pytest.importorskip("gymnasium_robotics")
    from PIL import Image

    from reasonrl.embodied.episodes import record_episodes, save_strip
    from vla_helpers import tiny_policy

    policy, tok = tiny_policy(chunk_len=2)
    traj = record_episodes(policy, tok, [("reach", 1), ("reach", 2)], max_steps=4, size=24)
    assert [len(f) for f in traj.frames] == traj.finish_step.tolist()
    png, gif = save_strip(traj, tmp_path / "s.png")
    assert Image.open(png).size[1] == 2 * 30 and Image.open(gif).n_frames == max(traj.finish_step.tolist())
    assert torch.is_tensor(traj.success)
