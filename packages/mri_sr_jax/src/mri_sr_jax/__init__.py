"""MoEDiff-SR and 1.5T-to-7T-like MRI super-resolution with progressive distillation.

Data (MNI152 template and dipy's T1 slice, both bundled in wheels), a degradation pipeline,
a diffusion core (schedules, parameterisations, DDPM / DDIM / probability-flow ODE samplers),
MoEDiff-SR's gated experts, baselines, metrics and NIfTI I/O.
"""

from ._data import REGIONS as REGIONS
from ._data import Template as Template
from ._data import axial_slices as axial_slices
from ._data import elastic_intensity_augment as elastic_intensity_augment
from ._data import load_dipy_t1_slice as load_dipy_t1_slice
from ._data import load_mni152 as load_mni152
from ._data import mni152_path as mni152_path
from ._data import region_masks as region_masks
from ._data import slab_split as slab_split
from ._degrade import DegradeConfig as DegradeConfig
from ._degrade import Degraded as Degraded
from ._degrade import bias_field as bias_field
from ._degrade import blur_decimate as blur_decimate
from ._degrade import degrade as degrade
from ._degrade import degrade_batch as degrade_batch
from ._degrade import gaussian_blur as gaussian_blur
from ._degrade import kspace_truncate as kspace_truncate
from ._degrade import radial_warp as radial_warp
from ._degrade import reduce_contrast as reduce_contrast
from ._degrade import rician as rician
from ._degrade import upsample as upsample
from ._losses import edge_loss as edge_loss
from ._losses import fft_magnitude_loss as fft_magnitude_loss
from ._losses import gate_targets as gate_targets
from ._losses import gradient_difference_loss as gradient_difference_loss
from ._losses import load_balance as load_balance
from ._metrics import hfen as hfen
from ._metrics import image_metrics as image_metrics
from ._metrics import psnr as psnr
from ._metrics import ssim as ssim
from ._moe import FeatureExtractor as FeatureExtractor
from ._moe import MoEDiffSR as MoEDiffSR
from ._moe import aggregate as aggregate
from ._moe import aggregate_reference as aggregate_reference
from ._moe import gate_to_pixels as gate_to_pixels
from ._nets import ConvDenoiser as ConvDenoiser
from ._nets import EDSRLite as EDSRLite
from ._nets import TinyUNet as TinyUNet
from ._nets import conv_denoiser_params as conv_denoiser_params
from ._nets import count_params as count_params
from ._nets import init_fast as init_fast
from ._nets import noise_embedding as noise_embedding
from ._nifti import highres_affine as highres_affine
from ._nifti import lowres_affine as lowres_affine
from ._nifti import superresolve_nifti as superresolve_nifti
from ._param import to_x0_eps as to_x0_eps
from ._param import training_target as training_target
from ._samplers import ddim_sample as ddim_sample
from ._samplers import ddpm_sample as ddpm_sample
from ._samplers import ddpm_sample_reference as ddpm_sample_reference
from ._samplers import ode_sample as ode_sample
from ._schedules import Schedule as Schedule
from ._schedules import cosine_schedule as cosine_schedule
from ._schedules import discrete_alpha_bars as discrete_alpha_bars
from ._schedules import discrete_betas as discrete_betas
from ._schedules import linear_schedule as linear_schedule
from ._schedules import make_schedule as make_schedule
from ._schedules import noise_level as noise_level
from ._schedules import q_sample as q_sample
from ._train import SRBatch as SRBatch
from ._train import Trainer as Trainer
from ._train import TrainState as TrainState
from ._train import diffusion_loss as diffusion_loss
from ._train import make_batch as make_batch
from ._train import make_trainer as make_trainer
from ._train import moe_loss as moe_loss
from ._train import regression_loss as regression_loss
from ._train import sample_residual as sample_residual

__version__ = "0.1.0"
