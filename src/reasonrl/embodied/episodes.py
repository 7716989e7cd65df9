"""Episode strips: a few greedy held-out episodes rendered headless (EGL), saved as a PNG strip and a GIF.

A strip has one row per episode (every ``every``-th frame, the last one always shown) framed green on
success and red on failure, so a report shows at a glance what the policy does before and after RL.
Frames come from the same ``run_episodes`` path as evaluation, with a rendering ``EnvPool`` in this
process (a policy without a camera ignores the images; rendering costs ~25-80 ms per frame on CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GREEN, RED = (40, 180, 60), (210, 40, 40)


def record_episodes(policy, tok, inits: list[tuple[str, int]], max_steps: int, size: int = 96):
    """Greedy episodes from ``inits`` with a frame per executed env step: ``Trajectories`` with ``frames``."""
    from reasonrl.embodied.envs import EnvPool
    from reasonrl.embodied.rollout import run_episodes

    with EnvPool(0, size, max_steps) as pool:
        return run_episodes(policy, pool, inits, tok, greedy=True, record=True)


def strip_image(frames: list[list[np.ndarray]], success: list[bool], every: int = 2, border: int = 3) -> np.ndarray:
    """(rows x cols) mosaic: row i = episode i's frames ``0, every, 2*every, ...`` and its last frame."""
    rows = []
    for fr, ok in zip(frames, success):
        idx = sorted(set(range(0, len(fr), every)) | {len(fr) - 1}) if fr else []
        rows.append([np.pad(fr[j], ((border, border), (border, border), (0, 0)), constant_values=0) for j in idx])
        for im in rows[-1]:
            im[:border], im[-border:], im[:, :border], im[:, -border:] = (GREEN if ok else RED,) * 4
    if not any(rows):
        raise ValueError("no frames recorded (was the pool built with image_size > 0?)")
    h, w = next(r[0].shape[:2] for r in rows if r)
    cols = max(len(r) for r in rows)
    out = np.full((h * len(rows), w * cols, 3), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            out[i * h:(i + 1) * h, j * w:(j + 1) * w] = im
    return out


def save_strip(traj, path_png: Path, every: int = 2, gif: bool = True) -> list[Path]:
    """Write the PNG strip (and a GIF of the episodes side by side) of recorded trajectories."""
    from PIL import Image

    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    ok = traj.success.tolist()
    Image.fromarray(strip_image(traj.frames, ok, every)).save(path_png)
    written = [path_png]
    if gif:
        n = max(len(f) for f in traj.frames)
        tiles = [strip_image([[f[min(t, len(f) - 1)]] for f in traj.frames], ok, 1) for t in range(n)]
        row = [Image.fromarray(np.concatenate(np.split(t, len(traj.frames), 0), 1)) for t in tiles]
        gif_path = path_png.with_suffix(".gif")
        row[0].save(gif_path, save_all=True, append_images=row[1:], duration=120, loop=0)
        written.append(gif_path)
    return written
