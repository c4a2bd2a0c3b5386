"""SOFTS: Efficient Multivariate Time Series Forecasting with Series-Core Fusion (Han, Chen, Ye, Zhan; NeurIPS 2024,
arXiv 2404.14197).

Official PyTorch code: https://github.com/Secilia-Cxy/SOFTS (`models/SOFTS.py`, `layers/Embed.py`,
`layers/Transformer_EncDec.py`). We follow it step by step:

1. Non-affine instance normalisation (`use_norm`, from the Non-stationary Transformer): per series, subtract the
   mean over time (no gradient through the mean) and divide by sqrt(population variance + 1e-5) (with gradient).
2. Series embedding (iTransformer's inverted embedding): one shared Linear(seq_len -> d_model) maps each series'
   whole lookback to one token; the `num_time_features` time-feature series of the lookback (`x_mark`, never
   normalised) join as extra tokens, so the encoder sees `enc_in + num_time_features` tokens; then dropout.
   `x_mark` is optional, as in the official `DataEmbedding_inverted` (`if x_mark is None`): without it the
   time-feature tokens are absent and the encoder sees only the `enc_in` series tokens. The parameters do not
   depend on the number of tokens, so this equals the same weights built with `num_time_features=0`.
3. `e_layers` post-norm encoder layers, STAR in place of attention (see `zoo.layers.star`):
   x <- LayerNorm(x + Dropout(STAR(x))), x <- LayerNorm(x + Dropout(conv2(Dropout(GELU(conv1(x)))))).
   The feed-forward's kernel-size-1 Conv1d layers are Dense layers here. There is no final LayerNorm.
4. A shared Linear(d_model -> pred_len) per token; the time-feature tokens are dropped; de-normalisation.

Numerics of the reference: exact (erf) GELU, LayerNorm epsilon 1e-5, PyTorch's default initialisation
(Linear/Conv1d weight and bias ~ U(+-1/sqrt(fan_in)), LayerNorm 1/0), so training starts where the official code
starts. Parameter names mirror the official module tree (`enc_embedding/value_embedding`,
`encoder/attn_layers_{i}/{attention/gen1..gen4, conv1, conv2, norm1, norm2}`, `projection`); the mapping is
documented in `checkpoints/convert/softs.py`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.contract import check_series
from zoo.layers import STAR, gelu, layer_norm, torch_dense
from zoo.registry import Paper, register_model

NORM_EPS = 1e-5  # PyTorch's LayerNorm default, and the variance epsilon of the instance normalisation


class SeriesEmbedding(nn.Module):
    """Inverted embedding (official `DataEmbedding_inverted`): every series' lookback becomes one token.

    x `[batch, seq_len, channels]` (+ x_mark `[batch, seq_len, F]`) -> `[batch, channels + F, d_model]`.
    """

    d_model: int
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, x_mark: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        tokens = jnp.swapaxes(x, 1, 2)
        if x_mark is not None:
            tokens = jnp.concatenate([tokens, jnp.swapaxes(x_mark, 1, 2).astype(tokens.dtype)], axis=1)
        embed = torch_dense(
            self.d_model, x.shape[1], dtype=self.dtype, param_dtype=self.param_dtype, name="value_embedding"
        )
        return nn.Dropout(self.dropout)(embed(tokens), deterministic=not train)


class EncoderLayer(nn.Module):
    """iTransformer's post-norm encoder layer with STAR as the token mixer, `[batch, tokens, d_model]` -> same."""

    d_core: int
    d_ff: int
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        d_model = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        x = x + drop(STAR(self.d_core, **kw, name="attention")(x, train=train))
        x = layer_norm(NORM_EPS, **kw, name="norm1")(x)
        y = drop(gelu(approximate=False)(torch_dense(self.d_ff, d_model, **kw, name="conv1")(x)))
        y = drop(torch_dense(d_model, self.d_ff, **kw, name="conv2")(y))
        return layer_norm(NORM_EPS, **kw, name="norm2")(x + y)


class Encoder(nn.Module):
    """`num_layers` encoder layers `attn_layers_{i}` (no final LayerNorm), `[batch, tokens, d_model]` -> same."""

    num_layers: int
    d_core: int
    d_ff: int
    dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for i in range(self.num_layers):
            x = EncoderLayer(
                self.d_core,
                self.d_ff,
                dropout=self.dropout,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"attn_layers_{i}",
            )(x, train=train)
        return x


class SOFTS(nn.Module):
    """SOFTS forecaster: x `[batch, seq_len, enc_in]` (+ x_mark `[batch, seq_len, num_time_features]`) ->
    forecast `[batch, pred_len, enc_in]` (float32).

    `num_time_features` is the number F of time-feature series in `x_mark` (4 = timeF features with freq 'h', the
    official default; 0 = no time-feature tokens, as in the official PEMS and Solar runs). `x_mark` is optional
    even when F > 0: called without it the model uses only the series tokens (the official code's `x_mark=None`
    path), exactly as the same weights built with `num_time_features=0`. `train=True` enables
    dropout and stochastic pooling, both drawn from the `dropout` PRNG stream. The defaults are the official
    run.py defaults.
    """

    seq_len: int = 96
    pred_len: int = 96
    enc_in: int = 7
    d_model: int = 512
    d_core: int = 512
    d_ff: int = 2048
    e_layers: int = 2
    dropout: float = 0.0
    use_norm: bool = True
    num_time_features: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for field in ("seq_len", "pred_len", "enc_in", "d_model", "d_core", "d_ff", "e_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"SOFTS: {field} must be >= 1, got {getattr(self, field)}")
        if self.num_time_features < 0:
            raise ValueError(f"SOFTS: num_time_features must be >= 0, got {self.num_time_features}")
        super().__post_init__()

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        spec = {"x": (self.seq_len, self.enc_in)}
        if self.num_time_features:
            spec["x_mark"] = (self.seq_len, self.num_time_features)
        return spec

    def _check_inputs(self, x: jax.Array, x_mark: jax.Array | None) -> None:
        model = type(self).__name__
        check_series(model, "x", x, (self.seq_len, self.enc_in))
        features = self.num_time_features
        if x_mark is None:
            return  # no time-feature tokens (allowed whatever num_time_features is)
        if not features:
            raise ValueError(
                f"{model} expects no x_mark (num_time_features=0), got shape {tuple(getattr(x_mark, 'shape', ()))}; "
                "create the model with num_time_features=F to add F time-feature tokens"
            )
        check_series(model, "x_mark", x_mark, (self.seq_len, features))
        if x_mark.shape[0] != x.shape[0]:
            shapes = f"{tuple(x.shape)} and {tuple(x_mark.shape)}"
            raise ValueError(f"{model} expects x and x_mark of the same batch size, got {shapes}")

    @nn.compact
    def __call__(self, x: jax.Array, x_mark: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        self._check_inputs(x, x_mark)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(jnp.float32)
        if self.use_norm:
            mean = jax.lax.stop_gradient(jnp.mean(x, axis=1, keepdims=True))  # [batch, 1, enc_in]
            x = x - mean
            std = jnp.sqrt(jnp.var(x, axis=1, keepdims=True) + NORM_EPS)  # population variance, with gradient
            x = x / std
        tokens = SeriesEmbedding(self.d_model, dropout=self.dropout, **kw, name="enc_embedding")(x, x_mark, train=train)
        tokens = Encoder(self.e_layers, self.d_core, self.d_ff, dropout=self.dropout, **kw, name="encoder")(
            tokens, train=train
        )
        y = torch_dense(self.pred_len, self.d_model, **kw, name="projection")(tokens)  # [batch, tokens, pred_len]
        y = jnp.swapaxes(y[:, : self.enc_in].astype(jnp.float32), 1, 2)  # time-feature tokens dropped
        if self.use_norm:
            y = y * std + mean
        return y


SOFTS_PAPER = Paper(
    title="SOFTS: Efficient Multivariate Time Series Forecasting with Series-Core Fusion",
    arxiv="2404.14197",
    code="https://github.com/Secilia-Cxy/SOFTS",
)


@register_model(SOFTS, family="softs", task="forecasting", paper=SOFTS_PAPER)
def softs():
    """SOFTS with the official run.py defaults (d_model 512, d_core 512, d_ff 2048, 2 layers, lookback 96, H 96).

    Also enc_in 7 (ETT), dropout 0, use_norm on and 4 timeF tokens (freq 'h'); set `enc_in`, `pred_len` and the
    widths of the per-dataset scripts with overrides.
    """
    return dict(
        seq_len=96,
        pred_len=96,
        enc_in=7,
        d_model=512,
        d_core=512,
        d_ff=2048,
        e_layers=2,
        dropout=0.0,
        use_norm=True,
        num_time_features=4,
    )
