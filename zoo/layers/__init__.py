"""Building blocks shared by the model families (each defined once, here)."""

from zoo.layers.conv import Conv, depthwise_conv2d
from zoo.layers.drop_path import DropPath
from zoo.layers.fourier import SpectralFilter1D, SpectralFilter2D, softshrink
from zoo.layers.head import ClassifierHead
from zoo.layers.init import torch_bias_init, torch_dense, torch_kernel_init
from zoo.layers.layer_scale import LayerScale
from zoo.layers.mlp import MlpBlock, gelu
from zoo.layers.norms import BatchNorm, layer_norm
from zoo.layers.patch_embed import PatchEmbed
from zoo.layers.scan import a_log_init, dt_bias_init, dt_kernel_init, selective_scan
from zoo.layers.shift import channel_groups, roll_groups, shift_groups, split_groups
from zoo.layers.star import STAR, softmax_pool, stochastic_pool

__all__ = [
    "STAR",
    "BatchNorm",
    "ClassifierHead",
    "Conv",
    "DropPath",
    "LayerScale",
    "MlpBlock",
    "PatchEmbed",
    "SpectralFilter1D",
    "SpectralFilter2D",
    "a_log_init",
    "channel_groups",
    "depthwise_conv2d",
    "dt_bias_init",
    "dt_kernel_init",
    "gelu",
    "layer_norm",
    "roll_groups",
    "selective_scan",
    "shift_groups",
    "softmax_pool",
    "softshrink",
    "split_groups",
    "stochastic_pool",
    "torch_bias_init",
    "torch_dense",
    "torch_kernel_init",
]
