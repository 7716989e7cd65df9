"""TensorBoard reads a run's event files in file-name order; a resumed writer's file must sort after
every earlier one even when it is opened within the same second (issue-11 flake: a replayed step read
in the wrong order)."""

import time

from reasonrl.trainer.logging import TensorBoardTracker


def test_a_resumed_writer_file_sorts_after_an_earlier_file_of_the_same_second(tmp_path):
    tb = tmp_path / "tensorboard"
    tb.mkdir()
    now = int(time.time())
    # an earlier writer of this second whose per-process counter sorts after ours as text ("9" > "10")
    earlier = tb / f"events.out.tfevents.{now:010d}.host.99999.9"
    earlier.write_bytes(b"")
    tracker = TensorBoardTracker(tmp_path, "r", resume_step=2)
    tracker.log({"reward/mean": 1.0}, 2)
    tracker.close()
    names = sorted(p.name for p in tb.glob("events.out.tfevents.*"))
    assert names[0] == earlier.name and len(names) == 2
    assert int(names[1].split(".")[3]) > now
