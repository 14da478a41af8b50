"""Host setup shared by the experiments: one XLA CPU call = one core."""

import os

# every token a `--` flag: XLA stops reading XLA_FLAGS at the first bare word, silently
# dropping whatever follows it (a bare `intra_op_parallelism_threads=1` did, until session 6)
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false"


def single_threaded_cpu() -> str:
    """Make every jitted CPU call single-threaded, so that a worker slot is a fixed amount of
    compute and an idle slot's core is not borrowed by a busy one (as with accelerators).

    XLA reads `XLA_FLAGS` when its CPU backend starts: call this before the first JAX
    computation (importing jax or this package is fine). Idempotent; returns the flags.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if SINGLE_THREAD_FLAGS not in flags:
        flags = f"{flags} {SINGLE_THREAD_FLAGS}".strip()
        os.environ["XLA_FLAGS"] = flags
    return flags
