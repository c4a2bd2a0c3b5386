"""Property tests (hypothesis) over the public API: random sizes for every family's small model build a model
whose output has the documented shape, or are refused at construction with a ValueError / TypeError, never an
error from inside JAX; random forecasting windows always count as the formula says; random pytrees survive a
save/restore round trip; random config overrides validate or are refused with a ValueError."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checkpoints
import zoo
from train import config as config_lib
from train.configs import default
from train.data import timeseries as ts

# Deterministic examples (the same on every run and machine), no per-example deadline (tracing takes time).
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

size = lambda hi: st.integers(min_value=-1, max_value=hi)  # includes 0 and a negative size
pair = lambda hi: st.tuples(size(hi), size(hi))

# Each family's small model and the fields varied; values include invalid ones (zero, negative, non-divisible).
SIZES = {
    "mixer_ti2_8": dict(patch_size=size(9), num_blocks=size(3), hidden_dim=size(24), tokens_mlp_dim=size(9)),
    "afnonet_ti2_8": dict(patch_size=size(9), embed_dim=size(24), depth=size(3), num_blocks=size(5)),
    "affnet_tiny_8": dict(stem_stride=size(3)),
    "msmlp_tiny_8": dict(patch_size=size(9), embed_dim=size(24), depths=pair(2)),
    "ninformer_ti2_8": dict(patch_size=size(9), d_model=size(24), d_ffn=size(9), num_layers=size(3)),
    "ffnet_tiny_8": dict(in_dim=size(24), depth=pair(2), embed_dim=pair(24)),
    "vim2_tiny_8": dict(patch_size=size(9), embed_dim=size(24), d_state=size(5), token_depths=pair(2)),
    "tsm2_tiny": dict(seq_len=size(40), pred_len=size(9), patch_len=size(12), stride=size(9), d_model=size(24)),
    "softs": dict(seq_len=size(40), pred_len=size(9), d_model=size(24), d_core=size(9), e_layers=size(3)),
}


rate = st.floats(-0.5, 1.5)
RATES = {
    "mixer_ti2_8": "drop_path_rate", "afnonet_ti2_8": "drop_path_rate", "affnet_tiny_8": "drop_path_rate",
    "msmlp_tiny_8": "drop_path_rate", "ninformer_ti2_8": "dropout", "ffnet_tiny_8": "drop_path_rate",
    "vim2_tiny_8": "drop_path_rate", "tsm2_tiny": "dropout", "softs": "dropout",
}  # fmt: skip


def _expected_shape(model, batch: int) -> tuple[int, ...]:
    if hasattr(model, "pred_len"):
        return (batch, model.pred_len, model.enc_in)
    return (batch, model.num_classes)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_random_sizes_build_a_working_model_or_are_refused_at_construction(name):
    @PROPERTY
    @given(st.fixed_dictionaries({}, optional={**SIZES[name], RATES[name]: rate}))
    def check(overrides):
        try:
            model = zoo.create_model(name, **overrides)
        except (ValueError, TypeError) as e:
            assert str(e), "a refusal must say why"
            return
        sizes = [v for field, value in overrides.items() if field != RATES[name] for v in np.ravel(value)]
        assert min(sizes, default=1) >= 1, f"{overrides}: a size below 1 must be refused at construction"
        assert 0 <= overrides.get(RATES[name], 0) < 1, f"{overrides}: a rate outside [0, 1) must be refused"
        example = {k: jnp.zeros((2, *shape), jnp.float32) for k, shape in zoo.input_spec(model).items()}
        init = lambda key: model.init_with_output(key, **example, train=False)[0]
        out = jax.eval_shape(init, jax.random.key(0))  # an error here is a size the constructor should refuse
        assert out.shape == _expected_shape(model, 2) and out.dtype == jnp.float32, (overrides, out)

    check()


@pytest.fixture(scope="module")
def csv_of(tmp_path_factory):
    """csv_of(n): a CSV of n hourly rows and two columns (written once per n)."""
    root, made = tmp_path_factory.mktemp("csv"), {}

    def make(n: int):
        if n not in made:
            dates = np.datetime64("2021-01-01T00") + np.arange(n).astype("timedelta64[h]")
            lines = ["date,a,OT"] + [f"{d},{i % 7},{i * 0.5}" for i, d in enumerate(dates.astype(str))]
            made[n] = root / f"rows{n}.csv"
            made[n].write_text("\n".join(lines).replace("T", " ") + "\n")
        return made[n]

    return make


def test_window_counts_follow_the_formula(csv_of):
    @PROPERTY
    @given(rows=st.integers(10, 300), seq_len=st.integers(1, 120), pred_len=st.integers(1, 60))
    def check(rows, seq_len, pred_len):
        # The standard protocol for a CSV that is not a benchmark: 70% / 10% / 20% of the rows; val and test
        # windows start seq_len rows early so their first target is the split's first row.
        train, test = int(rows * 0.7), int(rows * 0.2)
        starts = {"train": 0, "val": train - seq_len, "test": rows - test - seq_len}
        ends = {"train": train, "val": rows - test, "test": rows}
        for split in ("train", "val", "test"):
            expected = ends[split] - starts[split] - seq_len - pred_len + 1
            try:
                count = len(ts.forecasting_dataset(csv_of(rows), split, seq_len, pred_len))
            except ts.DataError as e:  # a split too short for one window, or lookback before the first row
                assert expected < 1 or starts[split] < 0, (split, str(e))
                continue
            assert starts[split] >= 0 and count == expected, (split, count, expected)

    check()


arrays = st.builds(
    lambda shape, dtype, seed: np.random.default_rng(seed).normal(size=shape).astype(dtype),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from([np.float32, np.int32, np.float16, jnp.bfloat16]),
    seed=st.integers(0, 2**16),
)
names = st.text("abcdefghij_0123456789", min_size=1, max_size=6)
trees = st.recursive(arrays, lambda sub: st.dictionaries(names, sub, min_size=1, max_size=3), max_leaves=6)


def test_preset_round_trip_of_random_trees(tmp_path_factory):
    @settings(PROPERTY, max_examples=6)
    @given(params=st.dictionaries(names, trees, min_size=1, max_size=3), state=st.booleans())
    def check(params, state):
        variables = {"params": params, **({"batch_stats": {"mean": np.arange(3.0, dtype=np.float32)}} if state else {})}
        directory = tmp_path_factory.mktemp("preset")
        checkpoints.save_variables(directory, variables, config={"model_name": "x"})
        loaded, config, _ = checkpoints.load_variables(directory)
        assert config == {"model_name": "x"}
        assert jax.tree.structure(loaded) == jax.tree.structure(variables)
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()

    check()


OVERRIDES = {
    "optim.lr": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)),
    "optim.b1": st.floats(-1, 2),
    "optim.weight_decay": st.floats(allow_nan=True),
    "batch_size": st.integers(-4, 4096),
    "accum_steps": st.integers(-1, 8),
    "total_steps": st.integers(-3, 10),
    "log_every_steps": st.integers(-2, 5),
    "ema_decay": st.floats(-1, 2),
    "task.label_smoothing": st.floats(-1, 2),
    "data.crop_pct": st.floats(-1, 2),
    "checkpoint.max_to_keep": st.integers(-1, 3),
}


def test_random_config_overrides_validate_or_are_refused_with_a_value_error():
    @PROPERTY
    @given(st.fixed_dictionaries({}, optional=OVERRIDES))
    def check(overrides):
        config = default.get_config("quicktest")
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node = config
            for p in parents:
                node = node[p]
            node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], float) else value
        try:
            checked = config_lib.validate(config)
        except ValueError as e:
            assert str(e)
            return
        lr = checked.optim.lr
        assert np.isfinite(lr) and lr >= 0 and checked.batch_size > 0 and checked.batch_size % checked.accum_steps == 0
        assert 0 <= checked.optim.b1 < 1 and 0 <= checked.ema_decay <= 1 and checked.log_every_steps > 0

    check()
