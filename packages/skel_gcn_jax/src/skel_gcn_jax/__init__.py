"""KGS-GCN: kinematic Gaussian splatting and probabilistic topology for skeleton action recognition.

Data (synthetic NTU-25 generator, NTU `.skeleton` reader, preprocessing), the NTU-25 graph,
kinematics-driven Gaussian splatting, Bhattacharyya probabilistic topology, the KGS-GCN model and
its GCN baselines (Flax NNX), and pure (optionally sharded) training functions.
"""

from ._graph import BODY_PARTS as BODY_PARTS
from ._graph import CENTER_JOINT as CENTER_JOINT
from ._graph import JOINT_NAMES as JOINT_NAMES
from ._graph import NTU_EDGES as NTU_EDGES
from ._graph import NUM_JOINTS as NUM_JOINTS
from ._graph import graph_conv_dense as graph_conv_dense
from ._graph import graph_conv_segment_sum as graph_conv_segment_sum
from ._graph import graph_to_dense as graph_to_dense
from ._graph import hop_distance as hop_distance
from ._graph import normalize_adjacency as normalize_adjacency
from ._graph import ntu_graph as ntu_graph
from ._graph import physical_adjacency as physical_adjacency
from ._graph import spatial_partitions as spatial_partitions
from ._kinematics import CLASS_NAMES as CLASS_NAMES
from ._kinematics import CONFUSABLE_PAIRS as CONFUSABLE_PAIRS
from ._kinematics import forward_kinematics as forward_kinematics
from ._models import SEPARABLE_SPLAT as SEPARABLE_SPLAT
from ._models import GCNClassifier as GCNClassifier
from ._models import HeatmapCNN as HeatmapCNN
from ._models import ModelConfig as ModelConfig
from ._models import check_skeletons as check_skeletons
from ._models import config_params as config_params
from ._models import count_params as count_params
from ._models import ctr_gcn_config as ctr_gcn_config
from ._models import kgs_gcn_config as kgs_gcn_config
from ._models import render_skeleton_heatmaps as render_skeleton_heatmaps
from ._models import st_gcn_config as st_gcn_config
from ._models import widen_to_params as widen_to_params
from ._ntu_io import read_ntu_skeleton as read_ntu_skeleton
from ._ntu_io import write_ntu_skeleton as write_ntu_skeleton
from ._preprocess import bone_stream as bone_stream
from ._preprocess import centre_skeleton as centre_skeleton
from ._preprocess import make_streams as make_streams
from ._preprocess import motion_stream as motion_stream
from ._preprocess import sample_frames as sample_frames
from ._preprocess import valid_mask as valid_mask
from ._splat import SplatConfig as SplatConfig
from ._splat import joint_velocity as joint_velocity
from ._splat import render_heatmaps as render_heatmaps
from ._splat import render_heatmaps_reference as render_heatmaps_reference
from ._splat import splat_covariances as splat_covariances
from ._synthetic import GeneratorConfig as GeneratorConfig
from ._synthetic import SkeletonDataset as SkeletonDataset
from ._synthetic import Subjects as Subjects
from ._synthetic import cross_subject_split as cross_subject_split
from ._synthetic import cross_view_split as cross_view_split
from ._synthetic import degrade_skeletons as degrade_skeletons
from ._synthetic import generate_skeletons as generate_skeletons
from ._synthetic import make_subjects as make_subjects
from ._synthetic import make_synthetic_dataset as make_synthetic_dataset
from ._topology import bhattacharyya_adjacency as bhattacharyya_adjacency
from ._topology import bhattacharyya_distance as bhattacharyya_distance
from ._topology import bhattacharyya_distance_reference as bhattacharyya_distance_reference
from ._topology import joint_gaussians as joint_gaussians
from ._topology import mix_adjacency as mix_adjacency
from ._train import PYSKL_STREAM_WEIGHTS as PYSKL_STREAM_WEIGHTS
from ._train import Trainer as Trainer
from ._train import TrainState as TrainState
from ._train import cross_entropy as cross_entropy
from ._train import data_mesh as data_mesh
from ._train import evaluate as evaluate
from ._train import fuse_stream_logits as fuse_stream_logits
from ._train import fused_stream_accuracy as fused_stream_accuracy
from ._train import make_trainer as make_trainer
from ._train import predict_logits as predict_logits
from ._train import topk_accuracy as topk_accuracy

__version__ = "0.1.0"
