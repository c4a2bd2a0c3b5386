"""Building blocks shared by the model families (each defined once, here)."""

from zoo.layers.drop_path import DropPath
from zoo.layers.head import ClassifierHead
from zoo.layers.init import torch_bias_init, torch_dense, torch_kernel_init
from zoo.layers.layer_scale import LayerScale
from zoo.layers.mlp import MlpBlock, gelu
from zoo.layers.norms import layer_norm
from zoo.layers.patch_embed import PatchEmbed
from zoo.layers.star import STAR, softmax_pool, stochastic_pool

__all__ = [
    "STAR",
    "ClassifierHead",
    "DropPath",
    "LayerScale",
    "MlpBlock",
    "PatchEmbed",
    "gelu",
    "layer_norm",
    "softmax_pool",
    "stochastic_pool",
    "torch_bias_init",
    "torch_dense",
    "torch_kernel_init",
]
