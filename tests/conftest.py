import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from reasonrl.threads import apply_thread_policy  # noqa: E402

apply_thread_policy(1)
