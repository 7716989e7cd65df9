"""Tasks from reasoning-gym (optional: ``pip install reasonrl[gym]``), graded by each dataset's own scorer
(the ``reasoning_gym`` verifier, :mod:`reasonrl.rewards.verifiers.reasoning_gym`).

reasoning-gym item ``i`` of a dataset built with seed ``s`` comes from ``Random(s + i)``, so two
nearby seeds give shifted copies of the same stream. The train and test seeds are therefore derived
by hashing ``(seed, split)`` into far-apart 31-bit values, and on top of that every train item whose
question appears among the first ``test_pool`` test items is replaced by a draw from another derived
seed. A test set of at most ``test_pool`` items is thus disjoint from the whole train stream.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from typing import Any

from reasonrl.tasks.base import Task

DEFAULT_TEST_POOL = 500
_MAX_REDRAWS = 50


def _rg():
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError("reasoning-gym tasks need the reasoning-gym package: pip install reasonrl[gym]") from e
    return reasoning_gym


def dataset_names() -> list[str]:
    """Every dataset name reasoning-gym registers."""
    return sorted(_rg().factory.DATASETS)


def _check_name(name: str) -> None:
    names = dataset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown reasoning-gym dataset {name!r}; {hint}valid names include "
                         f"{', '.join(names[:8])}, ... ({len(names)} in all; see reasoning_gym.factory.DATASETS)")


def _derived_seed(seed: int, split: str, attempt: int) -> int:
    digest = hashlib.blake2b(repr((seed, split, attempt)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _config_key(config: dict | None) -> str:
    return json.dumps(config or {}, sort_keys=True)


@functools.lru_cache(maxsize=64)
def _dataset(name: str, seed: int, size: int, config_key: str):
    return _rg().create_dataset(name, seed=seed, size=size, **json.loads(config_key))


def _jsonable(value: Any) -> Any:
    """A JSON round-trippable copy (tuples -> lists, sets -> sorted lists, numpy -> Python)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return str(value)


@functools.lru_cache(maxsize=16)
def _test_questions(name: str, seed: int, pool: int, config_key: str) -> frozenset[str]:
    ds = _dataset(name, _derived_seed(seed, "test", 0), pool, config_key)
    return frozenset(ds[i]["question"] for i in range(pool))


def load_reasoning_gym(name: str, n: int, seed: int, split: str, *, start: int = 0,
                       test_pool: int = DEFAULT_TEST_POOL, config: dict | None = None) -> list[Task]:
    """Items ``start..start+n-1`` of the ``split`` stream of reasoning-gym dataset ``name``.

    ``config`` passes dataset options (e.g. difficulty ranges) to ``create_dataset``. A test set may
    hold at most ``test_pool`` items (raise it, identically for both splits, for a bigger test set).
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, test")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    if split == "test" and start + n > test_pool:
        raise ValueError(f"a reasoning-gym test set is limited to test_pool={test_pool} items (asked for "
                         f"{start + n}); pass a larger test_pool, and the same one when loading train")
    _check_name(name)
    key = _config_key(config)
    size = max(start + n, test_pool)
    banned = _test_questions(name, seed, test_pool, key) if split == "train" else frozenset()
    tasks = []
    for i in range(start, start + n):
        for attempt in range(_MAX_REDRAWS):
            entry = _dataset(name, _derived_seed(seed, split, attempt), size, key)[i]
            if entry["question"] not in banned:
                break
        else:
            raise ValueError(f"reasoning-gym {name!r}: train item {i} collided with the test set "
                             f"{_MAX_REDRAWS} times; the dataset is too small to split, lower test_pool")
        entry = _jsonable(entry)
        tasks.append(Task(
            uid=f"rg-{name}-{hashlib.md5(entry['question'].encode()).hexdigest()[:12]}",
            prompt=entry["question"],
            answer="" if entry["answer"] is None else str(entry["answer"]),
            solution=None,
            verifier="reasoning_gym",
            meta={"family": name, "difficulty": None, "split": split, "index": i, "rg_dataset": name,
                  "rg_entry": entry, "rg_config": json.loads(key)},
        ))
    return tasks
