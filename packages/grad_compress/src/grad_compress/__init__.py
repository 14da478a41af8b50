"""EDGC: entropy-driven dynamic low-rank gradient compression (data- and pipeline-parallel).

Compressors are optax-like `(init, update)` pairs whose `update` runs the compressed collective
itself (inside `jax.shard_map`, over `axis_name`) and returns the averaged gradient, the new
per-device state and the exact bytes sent.
"""

from ._base import Compressor as Compressor
from ._codecs import Codec as Codec
from ._codecs import EFState as EFState
from ._codecs import codec_compressor as codec_compressor
from ._codecs import no_compression as no_compression
from ._codecs import pack_signs as pack_signs
from ._codecs import qsgd as qsgd
from ._codecs import randomk as randomk
from ._codecs import sign_sgd as sign_sgd
from ._codecs import topk as topk
from ._codecs import unpack_signs as unpack_signs
from ._combine import PartitionState as PartitionState
from ._combine import by_shape as by_shape
from ._combine import partition as partition
from ._comm_model import H100_CLUSTER as H100_CLUSTER
from ._comm_model import V100_CLUSTER as V100_CLUSTER
from ._comm_model import Network as Network
from ._comm_model import allgather_time as allgather_time
from ._comm_model import allreduce_time as allreduce_time
from ._comm_model import comm_time as comm_time
from ._comm_model import p2p_time as p2p_time
from ._controller import ControllerState as ControllerState
from ._controller import RankController as RankController
from ._controller import window_controller as window_controller
from ._edgc import EDGCState as EDGCState
from ._edgc import edgc as edgc
from ._entropy import EntropyEstimate as EntropyEstimate
from ._entropy import fixed_edges as fixed_edges
from ._entropy import gradient_entropy as gradient_entropy
from ._entropy import histogram_entropy as histogram_entropy
from ._entropy import subsample as subsample
from ._entropy import uniform_histogram_entropy as uniform_histogram_entropy
from ._pipeline import PipelineStats as PipelineStats
from ._pipeline import gpipe as gpipe
from ._pipeline import link_controller as link_controller
from ._pipeline import stage_send as stage_send
from ._policy import low_rank_policy as low_rank_policy
from ._policy import matrix_shape as matrix_shape
from ._policy import size_policy as size_policy
from ._powersgd import PowerSGDState as PowerSGDState
from ._powersgd import bucket_sizes as bucket_sizes
from ._powersgd import orthogonalize as orthogonalize
from ._powersgd import powersgd as powersgd
from ._rank_model import eckart_young_curve as eckart_young_curve
from ._rank_model import eckart_young_error as eckart_young_error
from ._rank_model import mc_error_curve as mc_error_curve
from ._rank_model import mp_error_curve as mp_error_curve
from ._rank_model import rank_for_entropy as rank_for_entropy
from ._rank_model import rank_for_error as rank_for_error
from ._stats import CommStats as CommStats
from ._stats import payload_nbytes as payload_nbytes

__version__ = "0.1.0"
