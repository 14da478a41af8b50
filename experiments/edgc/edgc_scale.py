"""Paper-scale alpha-beta model: what our measured ranks would save on the paper's clusters.

The paper trains GPT2-2.5B on 32 V100 and GPT2-12.1B on 64 H100 with pipeline x data parallelism.
It does not publish the layouts, batch sizes or interconnects, so these are stated assumptions:
DP x PP = 8 x 4 (V100) and 16 x 4 (H100), no tensor parallelism, fp16 gradients and factors,
1024-token sequences, 8 micro-batches per step, MFU 0.35 of the fp16 tensor peak, and the
`V100_CLUSTER` / `H100_CLUSTER` networks from grad_compress. A step is
  compute (6 N tokens / (gpus peak MFU), times the 1 + (pp-1)/micro GPipe bubble)
  + the slowest stage's data-parallel gradient all-reduce + the stage-to-stage activation sends;
compression and decompression compute is not modelled here (see the benchmark).
"""

import dataclasses
import math

import grad_compress as gc


@dataclasses.dataclass(frozen=True)
class Setup:
    name: str
    layers: int
    hidden: int
    dp: int
    pp: int
    net: gc.Network
    peak_flops: float
    global_batch: int
    vocab: int = 50257
    seq: int = 1024
    micro: int = 8
    mfu: float = 0.35
    itemsize: int = 2


BUCKET_BYTES = 25 * 2**20

SETUPS = (
    Setup("GPT2-2.5B on 32 V100", 54, 1920, 8, 4, gc.V100_CLUSTER, 125e12, 64),
    Setup("GPT2-12.1B on 64 H100", 38, 5120, 16, 4, gc.H100_CLUSTER, 989e12, 128),
)


def _stage_tensors(s: Setup, stage: int) -> list[tuple[int, ...]]:
    h = s.hidden
    per = s.layers // s.pp
    shapes = []
    for _ in range(per):
        shapes += [(h, 3 * h), (3 * h,), (h, h), (h,), (h, 4 * h), (4 * h,), (4 * h, h), (h,)]
        shapes += [(h,)] * 4
    if stage == 0:
        shapes += [(s.vocab, h), (s.seq, h)]
    if stage == s.pp - 1:
        shapes += [(h, s.vocab), (h,), (h,)]
    return shapes


def params(s: Setup) -> int:
    total = 0
    for st in range(s.pp):
        for shape in _stage_tensors(s, st):
            n = 1
            for d in shape:
                n *= d
            total += n
    return total


def stage_bytes(s: Setup, stage: int, rank: float | None) -> tuple[float, int]:
    """(bytes one worker all-reduces for a stage, messages); rank None = uncompressed.

    Tensors are bucketed as DDP / the PowerSGD hook do: uncompressed gradients in 25 MB buckets,
    all P factors in one bucket and all Q factors in another.
    """
    low, full = 0.0, 0.0
    for shape in _stage_tensors(s, stage):
        n = 1
        for d in shape:
            n *= d
        if len(shape) == 2 and rank is not None and (shape[0] + shape[1]) * rank < n:
            low += rank * (shape[0] + shape[1]) * s.itemsize
        else:
            full += n * s.itemsize
    msgs = (2 if low else 0) + max(1, math.ceil(full / BUCKET_BYTES))
    return low + full, msgs


def step_time(s: Setup, ranks: list[float | None]) -> dict[str, float]:
    """Modelled seconds per step with one rank per paper stage (None = uncompressed)."""
    gpus = s.dp * s.pp
    tokens = s.global_batch * s.seq
    compute = 6 * params(s) * tokens / (gpus * s.peak_flops * s.mfu) * (1 + (s.pp - 1) / s.micro)
    comm = 0.0
    for st in range(s.pp):
        nbytes, msgs = stage_bytes(s, st, ranks[st])
        comm = max(comm, gc.allreduce_time(nbytes, s.dp, s.net, messages=msgs))
    act = s.global_batch // s.dp // s.micro * s.seq * s.hidden * s.itemsize
    p2p = 2 * s.micro * gc.p2p_time(act, s.net) * (s.pp - 1)
    return {"compute": compute, "dp_comm": comm, "p2p": p2p, "total": compute + comm + p2p}


def map_ranks(our_ranks: list[float], s: Setup) -> list[float]:
    """Our stage k of S covers paper stages with the same relative depth."""
    n = len(our_ranks)
    return [our_ranks[min(st * n // s.pp, n - 1)] for st in range(s.pp)]
