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
    "depthwise_conv2d",
    "gelu",
    "layer_norm",
    "softmax_pool",
    "softshrink",
    "stochastic_pool",
    "torch_bias_init",
    "torch_dense",
    "torch_kernel_init",
]
