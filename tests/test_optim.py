"""Tests for train/optim.py: schedules against hand values, weight-decay mask, optimizer math, EMA."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train import optim


def cfg(name="adamw", sched="constant", **kw):
    c = optim.default_optim_config()
    c.name = name
    c.schedule.name = sched
    for k, v in kw.items():
        if k.startswith("s_"):
            c.schedule[k[2:]] = v
        else:
            c[k] = v
    return c


def lrs(c, steps, total_steps=100, steps_per_epoch=10):
    sched = optim.make_schedule(c, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    eager = np.array([float(sched(s)) for s in steps])
    jitted = np.array([float(jax.jit(sched)(jnp.int32(s))) for s in steps])
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    return eager


def test_constant_with_warmup():
    c = cfg(lr=1.0, s_warmup_steps=10, s_warmup_init_factor=0.1)
    np.testing.assert_allclose(lrs(c, [0, 5, 9, 10, 50, 99]), [0.1, 0.55, 0.91, 1.0, 1.0, 1.0], rtol=1e-6)


def test_cosine_with_warmup_and_end_factor():
    c = cfg(sched="cosine", lr=2.0, s_warmup_steps=10, s_end_lr_factor=0.1)
    got = lrs(c, [0, 5, 10, 35, 60, 110], total_steps=110)
    cos = lambda frac: 0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * frac))
    np.testing.assert_allclose(got, [0.0, 1.0, 2.0, cos(0.25), 1.1, 0.2], rtol=1e-5, atol=1e-7)


def test_linear_with_warmup_epochs():
    # warmup_epochs=0.5 of 20 steps = 10 warmup steps; then linear decay to 0 over the remaining 90 steps.
    c = cfg(sched="linear", lr=1.0, s_warmup_epochs=0.5)
    got = lrs(c, [0, 5, 10, 55, 100], total_steps=100, steps_per_epoch=20)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.5, 0.0], rtol=1e-6, atol=1e-7)


def test_step_decay_counts_epochs_from_step_zero():
    c = cfg(sched="step", lr=1.0, s_warmup_steps=5, s_decay_rate=0.5, s_decay_epochs=2)
    got = lrs(c, [0, 4, 5, 19, 20, 39, 40, 99], total_steps=100, steps_per_epoch=10)
    np.testing.assert_allclose(got, [0.0, 0.8, 1.0, 1.0, 0.5, 0.5, 0.25, 0.0625], rtol=1e-6)


def tslib_epoch_lrs(lr0, lradj, train_epochs, num_epochs):
    """The lr in force during each epoch of TSLib/SOFTS: set after 1-based epoch e by adjust_learning_rate."""
    lr, out = lr0, []
    for e in range(1, num_epochs + 1):
        out.append(lr)
        if lradj == "cosine":
            lr = lr0 / 2 * (1 + math.cos(e / train_epochs * math.pi))
        else:
            lr = lr0 * 0.5 ** (e - 1)
    return out


def test_epoch_cosine_matches_tslib():
    spe, lr0 = 7, 1e-3
    c = cfg(sched="epoch_cosine", lr=lr0, s_epochs=10)
    got = lrs(c, [0, 6, 7, 13, 14, 69, 75], total_steps=1000, steps_per_epoch=spe)
    want = [lr0, lr0, lr0 / 2 * (1 + math.cos(math.pi / 10)), lr0 / 2 * (1 + math.cos(math.pi / 10)),
            lr0 / 2 * (1 + math.cos(2 * math.pi / 10)), lr0 / 2 * (1 + math.cos(9 * math.pi / 10)), 0.0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    per_epoch = lrs(c, [e * spe + 3 for e in range(10)], total_steps=1000, steps_per_epoch=spe)
    np.testing.assert_allclose(per_epoch, tslib_epoch_lrs(lr0, "cosine", 10, 10), rtol=1e-5)


def test_epoch_cosine_epochs_fall_back_to_total_steps():
    c = cfg(sched="epoch_cosine", lr=1.0)  # ceil(33 / 7) = 5 epochs.
    got = lrs(c, [14, 28], total_steps=33, steps_per_epoch=7)
    np.testing.assert_allclose(got, [0.5 * (1 + math.cos(2 * math.pi / 5)), 0.5 * (1 + math.cos(4 * math.pi / 5))],
                               rtol=1e-5)


def test_type1_matches_tslib():
    c = cfg(sched="type1", lr=1.0)
    got = lrs(c, [0, 2, 3, 5, 6, 8, 9, 12], total_steps=100, steps_per_epoch=3)
    np.testing.assert_allclose(got, [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.125], rtol=1e-6)
    per_epoch = lrs(c, [e * 3 for e in range(8)], total_steps=100, steps_per_epoch=3)
    np.testing.assert_allclose(per_epoch, tslib_epoch_lrs(1.0, "type1", 0, 8), rtol=1e-6)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="stem")(x)
        x = nn.LayerNorm(name="norm")(x)
        scale = self.param("layer_scale", nn.initializers.ones, (4,))
        return nn.Dense(2, name="head")(x * scale)


def net_params():
    return Net().init(jax.random.key(0), jnp.ones((1, 5, 5, 3)))["params"]


def test_weight_decay_mask_on_flax_tree():
    params = net_params()
    want = {"stem": {"kernel": True, "bias": False}, "norm": {"scale": False, "bias": False},
            "layer_scale": False, "head": {"kernel": True, "bias": False}}
    assert optim.weight_decay_mask(params) == want
    assert optim.weight_decay_mask(jax.eval_shape(net_params)) == want
    # A 2-D leaf named scale is still excluded by name.
    assert optim.weight_decay_mask({"m": {"scale": jnp.ones((2, 2))}}) == {"m": {"scale": False}}


def run(tx, params, grads, n=1):
    state = tx.init(params)
    for _ in range(n):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_adamw_decays_kernel_not_bias():
    params = {"dense": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)}}
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), params)
    lr, wd = 0.1, 0.5
    adamw, _ = optim.make_optimizer(cfg("adamw", lr=lr, weight_decay=wd), params, total_steps=10, steps_per_epoch=5)
    adam, _ = optim.make_optimizer(cfg("adam", lr=lr), params, total_steps=10, steps_per_epoch=5)
    pw, pa = run(adamw, params, grads), run(adam, params, grads)
    np.testing.assert_array_equal(pw["dense"]["bias"], pa["dense"]["bias"])
    assert not np.allclose(pa["dense"]["bias"], 2.0)
    np.testing.assert_allclose(pw["dense"]["kernel"], pa["dense"]["kernel"] - lr * wd * 2.0, rtol=1e-6)
    everything, _ = optim.make_optimizer(cfg("adamw", lr=lr, weight_decay=wd, wd_mask="all"), params,
                                         total_steps=10, steps_per_epoch=5)
    np.testing.assert_allclose(run(everything, params, grads)["dense"]["bias"], pa["dense"]["bias"] - lr * wd * 2.0,
                               rtol=1e-6)


def test_grad_clip_caps_global_norm():
    params = {"a": jnp.zeros((1, 2)), "b": jnp.zeros((1,))}
    tx, _ = optim.make_optimizer(cfg("sgd", lr=1.0, momentum=0.0, grad_clip_norm=1.0), params,
                                 total_steps=10, steps_per_epoch=5)
    big = {"a": jnp.array([[3.0, 0.0]]), "b": jnp.array([4.0])}  # global norm 5
    upd, _ = tx.update(big, tx.init(params), params)
    assert float(optax.tree.norm(upd)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(upd["a"], [[-0.6, 0.0]], rtol=1e-6)
    small = {"a": jnp.array([[0.3, 0.0]]), "b": jnp.array([0.4])}  # norm 0.5: unchanged
    upd, _ = tx.update(small, tx.init(params), params)
    np.testing.assert_allclose(upd["b"], [-0.4], rtol=1e-6)


@pytest.mark.parametrize(
    "nesterov, wd, want",
    [(False, 0.0, [0.8, 0.46]), (True, 0.0, [0.62, 0.2224]), (False, 0.5, [0.75, 0.3375])],
)
def test_sgd_momentum_on_quadratic(nesterov, wd, want):
    # f(x) = x^2 (grad 2x), x0 = 1, lr 0.1, momentum 0.9; trace t = g + 0.9 t, update -lr*t (nesterov: -lr*(g+0.9t));
    # wd adds wd*x to the gradient before momentum.
    c = cfg("sgd", lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=wd)
    x = jnp.ones((1, 1))
    tx, _ = optim.make_optimizer(c, x, total_steps=10, steps_per_epoch=5)
    state, got = tx.init(x), []
    for _ in range(2):
        upd, state = tx.update(2 * x, state, x)
        x = optax.apply_updates(x, upd)
        got.append(float(x[0, 0]))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_optimizer_uses_the_returned_schedule():
    c = cfg("sgd", sched="cosine", lr=1.0, momentum=0.0, s_warmup_steps=2, s_warmup_init_factor=0.5)
    p = jnp.zeros(())
    tx, sched = optim.make_optimizer(c, p, total_steps=6, steps_per_epoch=3)
    state = tx.init(p)
    for step in range(6):
        upd, state = tx.update(jnp.ones(()), state, p)
        assert float(upd) == pytest.approx(-float(sched(step)), rel=1e-6)
    assert float(sched(0)) == pytest.approx(0.5) and float(sched(2)) == pytest.approx(1.0)


def test_lamb_runs_and_descends():
    params = {"w": jnp.full((4, 4), 3.0), "b": jnp.full((4,), 3.0)}
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
    tx, _ = optim.make_optimizer(cfg("lamb", sched="cosine", lr=0.05, weight_decay=0.01), params,
                                 total_steps=20, steps_per_epoch=5)

    @jax.jit
    def step(p, s):
        upd, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, upd), s

    p, s = params, tx.init(params)
    for _ in range(5):
        p, s = step(p, s)
    assert np.isfinite(float(loss(p))) and float(loss(p)) < float(loss(params))


def test_ema_update():
    ema = {"a": jnp.ones((2,)), "b": jnp.ones((2,), jnp.bfloat16)}
    params = {"a": jnp.full((2,), 3.0), "b": jnp.full((2,), 3.0, jnp.bfloat16)}
    out = jax.jit(optim.ema_update)(ema, params, 0.9)
    np.testing.assert_allclose(out["a"], [1.2, 1.2], rtol=1e-6)
    assert out["a"].dtype == jnp.float32 and out["b"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["b"], np.float32), [1.2, 1.2], rtol=1e-2)
    np.testing.assert_array_equal(optim.ema_update(ema, params, 1.0)["a"], ema["a"])


@pytest.mark.parametrize(
    "c, match",
    [
        (cfg("rmsprop"), r"Unknown optimizer 'rmsprop'; valid names: adamw, adam, sgd, lamb"),
        (cfg(sched="poly"), r"Unknown schedule 'poly'; valid names: constant, cosine, linear, step, epoch_cosine"),
        (cfg(lr=-1.0), r"optim.lr must be >= 0"),
        (cfg(sched="cosine", s_warmup_steps=100), r"Warmup \(100 steps\) must be shorter than training"),
        (cfg(sched="cosine", s_warmup_epochs=20.0), r"Warmup \(200 steps\) must be shorter"),
        (cfg(s_warmup_steps=5, s_warmup_epochs=1.0), r"not both"),
        (cfg("adam", weight_decay=0.1), r"'adam' has no weight decay.*use name='adamw'"),
        (cfg(wd_mask="kernels"), r"Unknown optim.wd_mask 'kernels'; valid: default, all"),
        (cfg(weight_decay=-0.1), r"weight_decay must be >= 0"),
        (cfg(sched="type1", s_warmup_steps=3), r"no warmup"),
    ],
)
def test_errors(c, match):
    with pytest.raises(ValueError, match=match):
        optim.make_optimizer(c, {"w": jnp.ones((2, 2))}, total_steps=100, steps_per_epoch=10)


def test_default_config_builds_and_locks_types():
    c = optim.default_optim_config()
    _, sched = optim.make_optimizer(c, net_params(), total_steps=100, steps_per_epoch=10)
    assert float(sched(0)) == pytest.approx(1e-3) and float(sched(100)) == pytest.approx(0.0, abs=1e-9)
    c.schedule.warmup_epochs = 2  # an int into a float field is accepted
    assert isinstance(c.schedule.warmup_epochs, float)
