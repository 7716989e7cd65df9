"""Driving environment layer: geometry, controller, derived labels, real frames, demos, the worker pool."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("highway_env")

from reasonrl.driving import envs as E  # noqa: E402


def test_ego_frame_and_controller():
    # heading +90 deg (driving along +y, i.e. to the right on screen): a point 10 m further along +y is ahead
    assert np.allclose(E.to_ego(np.array([3.0, 12.0]), np.array([3.0, 2.0]), math.pi / 2), [10.0, 0.0], atol=1e-9)
    straight = np.array([[10.0 * (k + 1), 0.0] for k in range(E.HORIZON)])
    acc, steer = E.waypoint_action(straight, speed=20.0)
    assert acc == pytest.approx(0.0) and steer == pytest.approx(0.0)  # 10 m per 0.5 s = 20 m/s: hold speed
    acc, steer = E.waypoint_action(straight * 1.5, speed=20.0)
    assert acc > 0 and steer == pytest.approx(0.0)
    _, steer = E.waypoint_action(straight + np.array([0.0, 2.0]), speed=20.0)
    assert steer > 0  # waypoints to the right (+y) -> steer right
    creep = np.array([[0.3 * (k + 1), 0.0] for k in range(E.HORIZON)]) + np.array([0.0, 0.3])
    _, steer = E.waypoint_action(creep, speed=0.5)  # 0.3 m sideways at 0.6 m: the look-ahead floor keeps it gentle
    assert 0 < steer < math.atan(2 * E.WHEELBASE * 0.3 / E.LOOKAHEAD_MIN ** 2) / E.STEER_MAX + 1e-6 < 0.2


def test_view_and_skill_labels():
    assert E.view_label(np.zeros((0, 2))) == 0
    assert E.view_label(np.array([[-8.0, 1.0], [30.0, 0.0]])) == E.VIEWS.index("rear")
    assert E.view_label(np.array([[2.0, -6.0]])) == E.VIEWS.index("left")
    assert E.view_label(np.array([[2.0, 6.0]])) == E.VIEWS.index("right")
    assert E.view_label(np.array([[0.0, 60.0]])) == 0  # out of range -> default front
    wp = np.zeros((E.HORIZON, 2))
    assert E.SKILLS[E.skill_label("highway", wp, 20, 20, 1.5, False)] == "emergency_brake"
    assert E.SKILLS[E.skill_label("merge", wp, 20, 20, math.inf, True)] == "merging"
    assert E.SKILLS[E.skill_label("roundabout", wp, 8, 8, math.inf, True)] == "giveway"
    wp[-1, 1] = 3.5
    assert E.SKILLS[E.skill_label("highway", wp, 20, 20, math.inf, False)] == "overtaking"
    wp[-1, 1] = 0.0
    assert E.SKILLS[E.skill_label("highway", wp, 20, 20, math.inf, False)] == "normal"


def test_frames_are_drawn_and_views_differ():
    ep = E.DriveEpisode("highway", duration=2)
    try:
        obs = ep.reset(3)
    finally:
        ep.close()
    assert obs.views.shape == (5, E.IMAGE_SIZE, E.IMAGE_SIZE) and obs.views.dtype == np.uint8
    assert obs.views.max() > 0
    assert min(np.abs(obs.views[0].astype(int) - obs.views[i]).mean() for i in range(1, 5)) > 0.5


def test_black_frames_are_refused():
    with pytest.raises(RuntimeError, match="SDL_VIDEODRIVER"):
        E.check_frames(np.zeros((5, 8, 8), dtype=np.uint8))


def test_black_frame_trap_is_avoided_even_when_the_variable_is_set():
    """A process started with SDL_VIDEODRIVER=dummy still gets drawn frames (setup_headless drops it)."""
    code = ("from reasonrl.driving import envs as E\nep = E.DriveEpisode('merge', 1)\n"
            "print(int(ep.reset(0).views.max()))\nep.close()\n")
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 0


def test_expert_demo_and_pool_agree_in_and_out_of_process():
    d = E.expert_demo("highway", 7, duration=3)
    t = len(d.states)
    assert not d.crashed and t == 6
    assert d.views.shape == (t, 5, E.IMAGE_SIZE, E.IMAGE_SIZE) and d.waypoints.shape == (t, E.HORIZON, 2)
    assert np.all(d.waypoints[:, :, 0] > 0) and np.all(np.diff(d.waypoints[:, :, 0], axis=1) > 0)  # drives forward
    assert d.view_labels.shape == d.skill_labels.shape == (t,)
    chunk = d.waypoints[0]
    results = []
    for n in (0, 1):
        with E.DrivePool(n_workers=n, duration=3) as pool:
            obs = pool.reset([("highway", 7), ("merge", 1)])
            r = pool.step({0: chunk, 1: chunk})
            results.append((obs[0].state, r[0].obs.state, r[1].distance, r[0].obs.meta["progress"]))
    for a, b in zip(*results):
        assert np.allclose(a, b)


def test_neighbour_kinematics_in_the_ego_frame():
    from types import SimpleNamespace as V

    ego = V(position=np.array([0.0, 0.0]), heading=0.0, speed=10.0)
    near = V(position=np.array([10.0, 4.0]), heading=0.0, speed=15.0)
    far = V(position=np.array([100.0, 0.0]), heading=0.0, speed=15.0)
    behind = V(position=np.array([-5.0, 0.0]), heading=math.pi / 2, speed=10.0)
    f = E.neighbour_features(ego, [far, near, behind], n=3).reshape(3, 5)
    # nearest first: behind (5 m), then near (10.8 m); far (100 m) is beyond the 50 m range -> empty slot
    assert np.allclose(f[0], [1, -0.1, 0.0, -0.5, 0.5])  # moving +y (right) at 10 m/s while ego moves +x at 10
    assert np.allclose(f[1], [1, 0.2, 0.08, 0.25, 0.0])
    assert np.allclose(f[2], 0)
    turned = V(position=np.array([0.0, 0.0]), heading=math.pi / 2, speed=0.0)  # ego faces +y: (0, 10) is ahead
    assert np.allclose(E.neighbour_features(turned, [V(position=np.array([0.0, 10.0]), heading=0.0, speed=0.0)], n=1),
                       [1, 0.2, 0.0, 0.0, 0.0], atol=1e-7)
    assert E.STATE_DIM == E.EGO_DIM + 5 * E.N_NEIGHBOURS


def test_expert_relabel_matches_the_demo_leaves_the_episode_alone_and_the_controller_tracks_it():
    demo = E.expert_demo("merge", 3, duration=3.0)
    ep = E.DriveEpisode("merge", duration=3.0)
    try:
        obs = ep.reset(3)
        assert obs.state.shape == (E.STATE_DIM,) and np.allclose(obs.state, demo.states[0])
        pos = ep.ego.position.copy()
        wp, skill = E.expert_relabel(ep)
        assert np.array_equal(ep.ego.position, pos)  # simulated on a copy
        assert np.allclose(wp, demo.waypoints[0], atol=0.5) and skill == demo.skill_labels[0]
        done = False
        while not done:  # tracking the expert's relabelled waypoints through the controller drives the route
            done = ep.step_waypoints(E.expert_waypoints(ep)).done
        assert not ep.crashed and ep.distance > 0.8 * demo.progress * E.REF_DISTANCE["merge"]
    finally:
        ep.close()
