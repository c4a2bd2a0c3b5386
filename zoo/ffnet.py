"""FFNet: MetaMixer-based Efficient Convolutional Mixer Design (Yun, Lee, Ro; arXiv 2406.02021, v1 "MetaMixer Is All
You Need").

Official PyTorch code: https://github.com/ysj9909/FFNet, read at f3c3e4c: `models/ffnet.py` (the timm-registered
`ffnet_1..4`) and `export_model.py` (re-parameterisation for inference). We follow the code, NHWC instead of NCHW,
with no LayerNorm inside the blocks (every norm is a BatchNorm with PyTorch's semantics, `zoo.layers.BatchNorm`):

    patch_embed   Conv_BN 3x3 s2 (in_chans -> in_dim) -> GELU -> Conv_BN 3x3 s2 (in_dim -> embed_dim[0])
    stages_s      [PatchMerging for s >= 1] + depth[s] x FFBlock
    norm          BatchNorm; global mean pool; `head` (Linear)

    FFBlock(x)    = channel_mixer(token_mixer_0(x)), each a residual: x + DropPath(layer_scale * main(x))
    token mixer   = conv2(GELU(conv1(fc(x))))  ("FFNified attention": fc ~ the query projection, conv1 ~ the query-key
                    interaction with large-kernel keys, GELU instead of softmax, conv2 ~ coefficient-value)
                    fc: 1x1 Conv_BN; conv1 / conv2: depthwise k x k, a RepVGGDW when k == 7, else a plain depthwise
                    conv with bias (no BN)
    channel mixer = fc2(GELU(fc1(conv(x))))  (conv: depthwise RepVGGDW when k == 7, else a depthwise Conv_BN;
                    fc1 / fc2: 1x1 convs with bias, C -> 3C -> C)
    RepVGGDW(x)   = Conv_BN_k(x) + Conv_BN_{k // 2}(x)  (two depthwise branches: 7x7 `conv` and 3x3 `conv1`)
    PatchMerging  = `proj_0`: RepVGGDW stride 2 with channel multiplier out / in (groups = C_in, C -> 2C);
                    `proj_1`: BN -> 1x1 conv (no bias), plus the identity

`Conv_BN` is a convolution without bias followed by BatchNorm. Exact GELU (PyTorch `nn.GELU()`). The official
SqueezeExcite option (`use_ses`) and ReLU option (`use_gelus`) are off in every released variant and left out;
so is the LayerNorm2d alternative to the final BatchNorm (`layer_norm_last=False` everywhere).

Initialisation (§8.3 of the notes): every conv and Linear weight N(0, 0.02^2) (the official `trunc_normal_(std=.02)`
cuts at +-2 absolute, i.e. never), biases 0, BatchNorm 1/0, layer scale `layer_scale_init_value` (1e-6 for FFNet-3/4).
Stochastic depth is linear in the block index over all blocks (timm DropPath, rescaled).

Parameter names mirror the official (unfused) state dict: a PyTorch key `a.b.3.c.weight` is ours `a/b_3/c/<leaf>`
(an index joins the name before it): `stages.2.1.token_mixer.0.main.conv1.conv.c.weight` ->
`stages_2_1/token_mixer_0/main/conv1/conv/c/kernel`, BatchNorm `bn.running_mean` -> `batch_stats/.../bn/mean`,
`layer_scale` (C, 1, 1) -> `.../layer_scale` (C,); see checkpoints/convert/ffnet.py.

Inference form (`merged=True`, the official `fuse()` of `export_model.py`): every Conv_BN is one conv with bias, every
RepVGGDW one 7x7 depthwise conv with bias (the 3x3 branch zero-padded into it), the downsample's BN -> 1x1 + identity
one 1x1 conv with bias; only the final `norm` stays a BatchNorm. The merged modules take the name of what they
replace (`.../main/fc/kernel`, `.../main/conv1/bias`, `stages_1_0/proj_1/kernel`), as the fused official model's
state dict does. `merge_branches(model, variables)` computes them from trained (running-statistics) variables.

Addition over the official model: `stem_strides` (default (2, 2), official) so that small images keep a grid.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.contract import as_hw, check_images
from zoo.layers import BatchNorm, ClassifierHead, Conv, DropPath, gelu
from zoo.registry import Paper, PretrainedCfg, register_model

BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, used by every FFNet norm
REP_KERNEL = 7  # the kernel size whose convs are RepVGGDW (official: `if ks == 7`)

# torch trunc_normal_(std=0.02) truncates at +-2 (absolute), i.e. never: a plain N(0, 0.02^2).
weight_init = nn.initializers.normal(0.02)
gelu_exact = gelu(approximate=False)


Branch = Callable[..., jax.Array]  # called as branch(x, train=...)


def _conv(features, kernel_size=1, strides=1, groups=1, use_bias=True, *, dtype, param_dtype, name) -> Conv:
    return Conv(
        features,
        kernel_size,
        strides=strides,
        groups=groups,
        use_bias=use_bias,
        kernel_init=weight_init,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def _merged_conv(features, kernel_size=1, strides=1, groups=1, *, dtype, param_dtype, name) -> Branch:
    """A re-parameterised branch: one conv with bias, named as the module it replaces."""
    conv = _conv(features, kernel_size, strides, groups, dtype=dtype, param_dtype=param_dtype, name=name)
    return lambda x, train=False: conv(x)


class ConvBN(nn.Module):
    """Official `Conv2d_BN`, `[batch, H, W, C_in] -> [batch, H / strides, W / strides, features]`: `c` (conv, no
    bias, padding k // 2) then `bn` (BatchNorm)."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    groups: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _conv(self.features, self.kernel_size, self.strides, self.groups, use_bias=False, name="c", **kw)(x)
        return BatchNorm(epsilon=BN_EPS, name="bn", **kw)(x, train=train)


class RepVGGDW(nn.Module):
    """Official `RepVGGDW`, `[batch, H, W, C] -> [batch, H / strides, W / strides, features]`: a depthwise k x k
    Conv_BN (`conv`) plus a depthwise (k // 2) x (k // 2) Conv_BN (`conv1`); groups = C, so `features = m * C` is a
    channel multiplier m (2 in the downsample, output channel o reads input channel o // m)."""

    features: int
    kernel_size: int = REP_KERNEL
    strides: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(strides=self.strides, groups=x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype)
        big = ConvBN(self.features, self.kernel_size, name="conv", **kw)(x, train=train)
        small = ConvBN(self.features, self.kernel_size // 2, name="conv1", **kw)(x, train=train)
        return big + small


class BNConv(nn.Module):
    """Official `BN_Conv2d` (1x1 only), `[batch, H, W, C] -> same`: `bn` (over the inputs) then `c` (1x1, no bias)."""

    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = BatchNorm(epsilon=BN_EPS, name="bn", **kw)(x, train=train)
        return _conv(x.shape[-1], use_bias=False, name="c", **kw)(y)


class BNConvSkip(nn.Module):
    """Official `Conv2d_BN_skip`, `[batch, H, W, C] -> same`: x + conv(x), `conv` a BNConv."""

    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return x + BNConv(self.dtype, self.param_dtype, name="conv")(x, train=train)


def conv_bn(features, kernel_size=1, strides=1, groups=1, *, merged, dtype, param_dtype, name) -> Branch:
    """A Conv_BN, or (merged) the conv with bias it folds into."""
    kw = dict(dtype=dtype, param_dtype=param_dtype, name=name)
    if merged:
        return _merged_conv(features, kernel_size, strides, groups, **kw)
    return ConvBN(features, kernel_size, strides, groups, **kw)


def rep_vgg_dw(features, groups, kernel_size=REP_KERNEL, strides=1, *, merged, dtype, param_dtype, name) -> Branch:
    """A RepVGGDW, or (merged) the single depthwise k x k conv with bias it folds into."""
    kw = dict(dtype=dtype, param_dtype=param_dtype, name=name)
    if merged:
        return _merged_conv(features, kernel_size, strides, groups, **kw)
    return RepVGGDW(features, kernel_size, strides, **kw)


class TokenMixer(nn.Module):
    """Official `Token_Mixer` ("FFNified attention"), `[batch, H, W, C] -> same`: conv2(GELU(conv1(fc(x)))).

    `fc` is a 1x1 Conv_BN; `conv1`/`conv2` are depthwise with kernels `kernel_size1`/`kernel_size2`: a RepVGGDW
    for 7, otherwise a plain depthwise conv with bias.
    """

    kernel_size1: int = 3
    kernel_size2: int = 3
    merged: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        kw = dict(merged=self.merged, **dtypes)
        channels = x.shape[-1]

        def depthwise(kernel_size, name):
            if kernel_size == REP_KERNEL:
                return rep_vgg_dw(channels, channels, kernel_size, name=name, **kw)
            conv = _conv(channels, kernel_size, groups=channels, **dtypes, name=name)
            return lambda y, train=False: conv(y)

        x = conv_bn(channels, name="fc", **kw)(x, train=train)
        x = depthwise(self.kernel_size1, "conv1")(x, train=train)
        x = gelu_exact(x)
        return depthwise(self.kernel_size2, "conv2")(x, train=train)


class ChannelMixer(nn.Module):
    """Official `Channel_Mixer`, `[batch, H, W, C] -> same`: fc2(GELU(fc1(conv(x)))).

    `conv` is depthwise: a RepVGGDW for kernel 7, otherwise a depthwise Conv_BN; `fc1`/`fc2` are 1x1 convs with bias,
    C -> int(C * expansion_ratio) -> C.
    """

    kernel_size: int = 3
    expansion_ratio: float = 3.0
    merged: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(merged=self.merged, dtype=self.dtype, param_dtype=self.param_dtype)
        channels = x.shape[-1]
        if self.kernel_size == REP_KERNEL:
            x = rep_vgg_dw(channels, channels, self.kernel_size, name="conv", **kw)(x, train=train)
        else:
            x = conv_bn(channels, self.kernel_size, groups=channels, name="conv", **kw)(x, train=train)
        dense = lambda features, name: _conv(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        x = gelu_exact(dense(int(channels * self.expansion_ratio), "fc1")(x))
        return dense(channels, "fc2")(x)


class ResidualBlock(nn.Module):
    """Official `ResidualBlock`, `[batch, H, W, C] -> same`: x + DropPath(layer_scale * main(x)).

    `main` builds the branch (called with `name="main"`); `layer_scale` (shape `[C]`, initialised to
    `layer_scale_init_value`) exists only when `layer_scale_init_value` is not None.
    """

    main: Callable[..., nn.Module]
    drop_path_rate: float = 0.0
    layer_scale_init_value: float | None = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        y = self.main(name="main")(x, train=train)
        if self.layer_scale_init_value is not None:
            init = nn.initializers.constant(self.layer_scale_init_value)
            gamma = self.param("layer_scale", init, (x.shape[-1],), self.param_dtype)
            y = y * gamma.astype(y.dtype)
        return x + DropPath(self.drop_path_rate)(y, train=train)


class FFBlock(nn.Module):
    """Official `FFBlock`, `[batch, H, W, C] -> same`: `token_mixer_0` then `channel_mixer`, both residual (the
    official `token_mixer` is Sequential(ResidualBlock, SqueezeExcite or Identity); SE is off in every variant)."""

    kernel_size: int = 3
    kernel_size1: int = 3
    kernel_size2: int = 3
    expansion_ratio: float = 3.0
    drop_path_rate: float = 0.0
    layer_scale_init_value: float | None = None
    merged: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(merged=self.merged, dtype=self.dtype, param_dtype=self.param_dtype)
        residual = functools.partial(
            ResidualBlock,
            drop_path_rate=self.drop_path_rate,
            layer_scale_init_value=self.layer_scale_init_value,
            param_dtype=self.param_dtype,
        )
        token = functools.partial(TokenMixer, self.kernel_size1, self.kernel_size2, **kw)
        x = residual(token, name="token_mixer_0")(x, train=train)
        channel = functools.partial(ChannelMixer, self.kernel_size, self.expansion_ratio, **kw)
        return residual(channel, name="channel_mixer")(x, train=train)


class PatchMerging(nn.Module):
    """Official `PatchMerging`, `[batch, H, W, C] -> [batch, ceil(H / 2), ceil(W / 2), features]`: `proj_0` a
    stride-2 RepVGGDW with channel multiplier features / C, `proj_1` a BNConvSkip (merged: one 1x1 conv with bias)."""

    features: int
    merged: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = rep_vgg_dw(self.features, x.shape[-1], strides=2, merged=self.merged, name="proj_0", **kw)(x, train=train)
        if self.merged:
            return _merged_conv(self.features, name="proj_1", **kw)(x, train=train)
        return BNConvSkip(name="proj_1", **kw)(x, train=train)


def _check_stage_tuples(model: "FFNet") -> int:
    names = ("depth", "embed_dim", "kernel_sizes", "kernel_sizes1", "kernel_sizes2", "expansion_ratios")
    values = {n: getattr(model, n) for n in names}
    for name, value in values.items():
        if not isinstance(value, tuple | list) or not value:
            raise ValueError(f"FFNet: {name} must be a non-empty tuple (one entry per stage), got {value!r}")
    lengths = {n: len(v) for n, v in values.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"FFNet: the per-stage tuples must have one length, got {lengths}")
    if any(d <= 0 for d in model.depth) or any(c <= 0 for c in model.embed_dim):
        raise ValueError(f"FFNet: depth and embed_dim must be positive, got {model.depth} and {model.embed_dim}")
    for name in ("kernel_sizes", "kernel_sizes1", "kernel_sizes2"):
        if any(k <= 0 or k % 2 == 0 for k in values[name]):
            raise ValueError(f"FFNet: {name} must be positive odd kernel sizes, got {values[name]}")
    if any(int(c * r) <= 0 for c, r in zip(model.embed_dim, model.expansion_ratios, strict=True)):
        raise ValueError(f"FFNet: expansion_ratios must give positive hidden widths, got {model.expansion_ratios}")
    for s in range(1, len(model.embed_dim)):
        prev, cur = model.embed_dim[s - 1], model.embed_dim[s]
        if cur % prev:
            raise ValueError(
                f"FFNet: stage {s} has {cur} channels, not a multiple of the previous stage's {prev} (the downsample "
                "is a depthwise conv with a channel multiplier)"
            )
    return lengths["depth"]


class FFNet(nn.Module):
    """FFNet classifier: images `[batch, H, W, in_chans]` -> logits `[batch, num_classes]` (float32).

    `num_classes=0` returns the pooled features `[batch, embed_dim[-1]]` (after the final BatchNorm). Field names
    are the official constructor's: per stage `depth`, `embed_dim`, `kernel_sizes` (channel mixer's depthwise
    kernel), `kernel_sizes1`/`kernel_sizes2` (token mixer's conv1/conv2), `expansion_ratios`; `in_dim` is the stem
    width. `merged=True` builds the re-parameterised inference form (see `merge_branches`).
    """

    num_classes: int = 1000
    img_size: int | tuple[int, int] = 256
    in_chans: int = 3
    in_dim: int = 64
    stem_strides: tuple[int, int] = (2, 2)
    depth: tuple[int, ...] = (2, 2, 8, 2)
    embed_dim: tuple[int, ...] = (80, 160, 320, 640)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)
    kernel_sizes1: tuple[int, ...] = (3, 3, 7, 7)
    kernel_sizes2: tuple[int, ...] = (3, 3, 7, 7)
    expansion_ratios: tuple[float, ...] = (3, 3, 3, 3)
    use_layer_scale: bool = False
    layer_scale_init_value: float = 1e-5
    drop_path_rate: float = 0.0
    merged: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.num_classes < 0:
            raise ValueError(f"FFNet: num_classes must be >= 0, got {self.num_classes}")
        if self.in_chans <= 0 or self.in_dim <= 0 or min(as_hw(self.img_size)) <= 0:
            raise ValueError(
                f"FFNet: img_size, in_chans and in_dim must be positive, got {self.img_size}, {self.in_chans}, "
                f"{self.in_dim}"
            )
        if len(tuple(self.stem_strides)) != 2 or any(s not in (1, 2) for s in self.stem_strides):
            raise ValueError(f"FFNet: stem_strides must be two strides, each 1 or 2, got {self.stem_strides}")
        _check_stage_tuples(self)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"FFNet: drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        super().__post_init__()

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"images": (*as_hw(self.img_size), self.in_chans)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        check_images(type(self).__name__, images, self.img_size, self.in_chans)
        kw = dict(merged=self.merged, dtype=self.dtype, param_dtype=self.param_dtype)
        x = images.astype(self.dtype)
        x = conv_bn(self.in_dim, 3, self.stem_strides[0], name="patch_embed_0", **kw)(x, train=train)
        x = gelu_exact(x)
        x = conv_bn(self.embed_dim[0], 3, self.stem_strides[1], name="patch_embed_2", **kw)(x, train=train)
        total, done = sum(self.depth), 0
        rates = np.linspace(0.0, self.drop_path_rate, total) if total > 1 else [0.0]  # torch.linspace(0, rate, n)
        layer_scale = self.layer_scale_init_value if self.use_layer_scale else None
        for s, (channels, depth) in enumerate(zip(self.embed_dim, self.depth, strict=True)):
            first = 0
            if s > 0:
                x = PatchMerging(channels, name=f"stages_{s}_0", **kw)(x, train=train)
                first = 1
            for j in range(depth):
                x = FFBlock(
                    self.kernel_sizes[s],
                    self.kernel_sizes1[s],
                    self.kernel_sizes2[s],
                    self.expansion_ratios[s],
                    drop_path_rate=float(rates[done + j]),
                    layer_scale_init_value=layer_scale,
                    name=f"stages_{s}_{first + j}",
                    **kw,
                )(x, train=train)
            done += depth
        x = BatchNorm(epsilon=BN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x, train=train)
        return ClassifierHead(
            self.num_classes, kernel_init=weight_init, dtype=self.dtype, param_dtype=self.param_dtype, name="head"
        )(x.reshape(x.shape[0], -1, x.shape[-1]), train=train)


# ---------------------------------------------------------------------------------------------------------------
# Re-parameterisation (the official `fuse()` methods, applied as `export_model.replace_batchnorm` does).


def _bn_affine(params: Mapping, stats: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in evaluation as y = x * a + b, per channel (float64)."""
    a = np.asarray(params["scale"], np.float64) / np.sqrt(np.asarray(stats["var"], np.float64) + BN_EPS)
    return a, np.asarray(params["bias"], np.float64) - np.asarray(stats["mean"], np.float64) * a


def _fuse_conv_bn(params: Mapping, stats: Mapping) -> dict:
    """Conv2d_BN.fuse: the BN scale folds into each output channel of the kernel `[k, k, in / groups, out]`."""
    a, b = _bn_affine(params["bn"], stats["bn"])
    return {"kernel": np.asarray(params["c"]["kernel"], np.float64) * a, "bias": b}


def _fuse_rep_vgg_dw(params: Mapping, stats: Mapping) -> dict:
    """RepVGGDW.fuse: both branches fused, the small kernel zero-padded to the large one's size, then summed."""
    big, small = _fuse_conv_bn(params["conv"], stats["conv"]), _fuse_conv_bn(params["conv1"], stats["conv1"])
    pad = (big["kernel"].shape[0] - small["kernel"].shape[0]) // 2
    padded = np.pad(small["kernel"], ((pad, pad), (pad, pad), (0, 0), (0, 0)))
    return {"kernel": big["kernel"] + padded, "bias": big["bias"] + small["bias"]}


def _fuse_bn_conv_skip(params: Mapping, stats: Mapping) -> dict:
    """Conv2d_BN_skip.fuse: c(x * a + b) + x = x (diag(a) W + I) + b W for the 1x1 kernel W `[in, out]`."""
    a, b = _bn_affine(params["conv"]["bn"], stats["conv"]["bn"])
    w = np.asarray(params["conv"]["c"]["kernel"], np.float64)[0, 0]
    kernel = a[:, None] * w + np.eye(w.shape[0])
    return {"kernel": kernel[None, None], "bias": b @ w}


def merge_branches(model: FFNet, variables: Mapping[str, Any]) -> tuple[FFNet, dict[str, Any]]:
    """The inference form of `model` and its variables: `(model.clone(merged=True), merged_variables)`.

    Every BatchNorm except the final `norm` folds (with its running statistics) into the conv before it (or, in the
    downsample, after it), each RepVGGDW's two branches become one 7x7 depthwise conv, and the downsample's skip
    joins its 1x1 conv, exactly as the official `fuse()` methods. Arithmetic in float64, results in the parameters'
    dtype. Evaluation-mode outputs are unchanged (up to float rounding).
    """
    if not isinstance(model, FFNet) or model.merged:
        raise ValueError("merge_branches expects an unmerged FFNet (merged=False)")
    params = jax.tree.map(np.asarray, dict(variables["params"]))
    stats = jax.tree.map(np.asarray, dict(variables["batch_stats"]))
    out = jax.tree.map(lambda a: a, params)  # a copy of the nested dicts

    def put(path: str, fused: dict) -> None:
        *parents, last = path.split("/")
        node = out
        for p in parents:
            node = node[p]
        node[last] = fused

    def get(tree, path: str):
        for p in path.split("/"):
            tree = tree[p]
        return tree

    def fuse(path: str, fn) -> None:
        put(path, fn(get(params, path), get(stats, path)))

    for name in ("patch_embed_0", "patch_embed_2"):
        fuse(name, _fuse_conv_bn)
    for s, depth in enumerate(model.depth):
        first = 0
        if s > 0:
            fuse(f"stages_{s}_0/proj_0", _fuse_rep_vgg_dw)
            fuse(f"stages_{s}_0/proj_1", _fuse_bn_conv_skip)
            first = 1
        for j in range(first, first + depth):
            token, channel = f"stages_{s}_{j}/token_mixer_0/main", f"stages_{s}_{j}/channel_mixer/main"
            fuse(f"{token}/fc", _fuse_conv_bn)
            for conv, k in (("conv1", model.kernel_sizes1[s]), ("conv2", model.kernel_sizes2[s])):
                if k == REP_KERNEL:
                    fuse(f"{token}/{conv}", _fuse_rep_vgg_dw)
            fuse(f"{channel}/conv", _fuse_rep_vgg_dw if model.kernel_sizes[s] == REP_KERNEL else _fuse_conv_bn)

    merged = model.clone(merged=True)
    reference = jax.eval_shape(
        lambda: merged.init(jax.random.key(0), jnp.zeros((1, *merged.input_spec()["images"]), jnp.float32))
    )
    dtypes = jax.tree.map(lambda a: a.dtype, reference["params"])
    merged_params = jax.tree.map(lambda a, dtype: np.asarray(a).astype(dtype), out, dtypes)
    return merged, {"params": merged_params, "batch_stats": {"norm": stats["norm"]}}


# ---------------------------------------------------------------------------------------------------------------
# Registered variants.

FFNET = Paper(
    title="FFNet: MetaMixer-based Efficient Convolutional Mixer Design",
    arxiv="2406.02021",
    code="https://github.com/ysj9909/FFNet",
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_data = lambda crop_pct: dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=crop_pct, interpolation="bicubic")
_register = lambda crop_pct, **kw: register_model(
    FFNet, family="ffnet", task="classification", paper=FFNET, data_config=_data(crop_pct), **kw
)

_GITHUB = "https://github.com/ysj9909/FFNet/releases/download/v1.0"
_FROM_SCRATCH = "ImageNet-1k from scratch (300 epochs)"
_DISTILLED = "ImageNet-1k (300 epochs), hard distillation from a RegNetY-160 teacher"
_FINE_TUNED = "ImageNet-1k, fine-tuned at 384x384 (30 epochs)"


def _release(file: str, img_size: int, crop_pct: float, paper_top1: float, dataset: str) -> PretrainedCfg:
    """A `.pth.tar` of the GitHub release v1.0 (no sha256 is published): a timm training checkpoint, the unfused
    (trained) layout under `state_dict`. Whether the files also keep timm's `state_dict_ema`, and whether the README
    accuracies are the EMA's, is not known (pass `state_dict_key="state_dict_ema"` to load the EMA weights)."""
    return PretrainedCfg(
        url=f"{_GITHUB}/{file}",
        source="official",
        num_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=(img_size, img_size, 3),
        crop_pct=crop_pct,
        interpolation="bicubic",
        license="none stated (see the official repository)",
        notes="timm training checkpoint, unfused weights under `state_dict`; top-1 from the official README",
        dataset=dataset,
        paper_top1=paper_top1,
        state_dict_key="state_dict",
    )


def _releases(name: str, img_size: int, crop_pct: float, paper_top1: float, distilled_top1: float | None = None):
    """`in1k` (and `in1k_dist`, the `<name>_distillation.pth.tar` file, where the README lists one)."""
    dataset = _FROM_SCRATCH if img_size == 256 else _FINE_TUNED
    releases = {"in1k": _release(f"{name}.pth.tar", img_size, crop_pct, paper_top1, dataset)}
    if distilled_top1 is not None:
        file = f"{name}_distillation.pth.tar"
        releases["in1k_dist"] = _release(file, img_size, crop_pct, distilled_top1, _DISTILLED)
    return releases


_STAGE_KERNELS = dict(kernel_sizes1=(3, 3, 7, 7), kernel_sizes2=(3, 3, 7, 7), expansion_ratios=(3, 3, 3, 3))
_FFNET_3 = dict(
    depth=(4, 4, 22, 5),
    embed_dim=(96, 192, 384, 768),
    kernel_sizes=(7, 7, 7, 7),
    use_layer_scale=True,
    layer_scale_init_value=1e-6,
    **_STAGE_KERNELS,
)


@_register(0.9, pretrained=_releases("ffnet_1", 256, 0.9, 81.3, 82.1))
def ffnet_1():
    """FFNet-1 at 256x256: 13.7M parameters re-parameterised (13.8M as trained), 81.3% ImageNet top-1 (README)."""
    return dict(
        img_size=256,
        depth=(2, 2, 8, 2),
        embed_dim=(80, 160, 320, 640),
        kernel_sizes=(3, 3, 3, 3),
        drop_path_rate=0.1,
        **_STAGE_KERNELS,
    )


@_register(0.9, pretrained=_releases("ffnet_2", 256, 0.9, 82.9, 83.7))
def ffnet_2():
    """FFNet-2 at 256x256: 26.9M parameters re-parameterised (27.2M as trained), 82.9% ImageNet top-1 (README)."""
    return dict(
        img_size=256,
        depth=(3, 3, 15, 3),
        embed_dim=(88, 176, 352, 704),
        kernel_sizes=(7, 7, 7, 7),
        drop_path_rate=0.15,
        **_STAGE_KERNELS,
    )


@_register(0.95, pretrained=_releases("ffnet_3", 256, 0.95, 83.9, 84.5))
def ffnet_3():
    """FFNet-3 at 256x256: 48.3M parameters re-parameterised (48.8M as trained), 83.9% ImageNet top-1 (README)."""
    return dict(img_size=256, drop_path_rate=0.35, **_FFNET_3)


@_register(0.95, pretrained=_releases("ffnet_3_384", 384, 0.95, 84.5))
def ffnet_3_384():
    """FFNet-3 fine-tuned at 384x384 (drop path 0.4): 48.3M parameters re-parameterised, 84.5% top-1 (README)."""
    return dict(img_size=384, drop_path_rate=0.4, **_FFNET_3)


@_register(0.95, pretrained=_releases("ffnet_4_384", 384, 0.95, 85.3))
def ffnet_4_384():
    """FFNet-4 at 384x384 (fine-tune drop path 0.5): 79.2M parameters re-parameterised, 85.3% top-1 (README)."""
    return dict(
        img_size=384,
        depth=(4, 4, 27, 3),
        embed_dim=(128, 256, 512, 1024),
        kernel_sizes=(7, 7, 7, 7),
        use_layer_scale=True,
        layer_scale_init_value=1e-6,
        drop_path_rate=0.5,
        **_STAGE_KERNELS,
    )


@_register(0.9)
def ffnet_tiny_8():
    """A tiny FFNet for 8x8 grayscale images (scikit-learn digits): stem 8x8 -> 4x4, stages on 4x4 and 2x2 grids,
    every branch kind (plain 3x3 and RepVGGDW token convs, Conv_BN and RepVGGDW channel convs, layer scale)."""
    return dict(
        img_size=8,
        in_chans=1,
        in_dim=16,
        stem_strides=(1, 2),
        depth=(1, 1),
        embed_dim=(24, 48),
        kernel_sizes=(3, 7),
        kernel_sizes1=(3, 7),
        kernel_sizes2=(3, 7),
        expansion_ratios=(3, 3),
        use_layer_scale=True,
        layer_scale_init_value=1.0,
    )
