"""Task objects: masked losses and metric sums checked against NumPy, and mixup/cutmix soft labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.tasks import ClassificationTask, ForecastingTask, reduce_metrics


def _softmax_ce(logits, onehot):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(onehot * logp).sum(axis=1)


def test_classification_loss_and_metrics_ignore_padding():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 6)
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    batch = {"label": jnp.asarray(labels), "mask": jnp.asarray(mask)}
    task = ClassificationTask(num_classes=10, label_smoothing=0.1)
    total, count = task.loss(jnp.asarray(logits), batch)
    smoothed = np.eye(10)[labels] * 0.9 + 0.01
    assert count == 4
    np.testing.assert_allclose(total, _softmax_ce(logits, smoothed)[:4].sum(), rtol=1e-5)
    metrics = reduce_metrics(jax.device_get(task.metrics(jnp.asarray(logits), batch)))
    order = np.argsort(-logits, axis=1)
    top1 = (order[:, 0] == labels)[:4].mean()
    top5 = np.array([labels[i] in order[i, :5] for i in range(6)])[:4].mean()
    assert metrics["accuracy"] == pytest.approx(top1) and metrics["top5"] == pytest.approx(top5)
    np.testing.assert_allclose(metrics["loss"], _softmax_ce(logits, np.eye(10)[labels])[:4].mean(), rtol=1e-5)


def test_tied_logits_are_not_all_correct():
    """Constant logits (a zero-initialised head) predict class 0, as argmax does: top-1 is the share of label 0 and
    top-5 the share of labels 0-4, not 100%."""
    labels = np.arange(10)
    batch = {"label": jnp.asarray(labels), "mask": jnp.ones(10)}
    logits = np.zeros((10, 10), np.float32)
    logits[:, 7:] = -1.0  # classes 7-9 lose; 0-6 tie
    metrics = reduce_metrics(jax.device_get(ClassificationTask(num_classes=10).metrics(jnp.asarray(logits), batch)))
    assert metrics["accuracy"] == pytest.approx(0.1) and metrics["top5"] == pytest.approx(0.5)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_and_cutmix_make_consistent_soft_labels(mixup, cutmix):
    task = ClassificationTask(num_classes=4, mixup_alpha=mixup, cutmix_alpha=cutmix)
    images = jnp.stack([jnp.full((8, 8, 1), float(i)) for i in range(4)])
    batch = {"image": images, "label": jnp.arange(4), "mask": jnp.ones(4)}
    for seed in range(5):
        out = task.prepare_train_batch(batch, jax.random.key(seed))
        soft = np.asarray(out["soft_label"])
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
        lam = soft[np.arange(4), np.arange(4)]
        # Each image is lam * itself + (1 - lam) * its neighbour (index i - 1): its mean pixel says so.
        expected_mean = lam * np.arange(4) + (1 - lam) * np.roll(np.arange(4), 1)
        np.testing.assert_allclose(np.asarray(out["image"]).mean(axis=(1, 2, 3)), expected_mean, atol=1e-5)
        np.testing.assert_allclose(soft[np.arange(4), np.roll(np.arange(4), 1)], 1 - lam, atol=1e-6)


def test_forecasting_metrics_score_the_target_slice_and_original_scale():
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((3, 5, 4)).astype(np.float32)
    true = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([1, 1, 0], np.float32)
    mean, scale = (1.0, 2.0, 3.0, 4.0), (0.5, 1.0, 2.0, 4.0)
    task = ForecastingTask(target_start=3, target_stop=None, scaler_mean=mean, scaler_scale=scale)  # MS: last
    batch = {"y": jnp.asarray(true), "mask": jnp.asarray(mask)}
    metrics = reduce_metrics(jax.device_get(task.metrics(jnp.asarray(pred), batch)))
    err = (pred - true)[:2, :, 3:]
    assert metrics["mse"] == pytest.approx(float((err**2).mean()), rel=1e-6)
    assert metrics["mae"] == pytest.approx(float(np.abs(err).mean()), rel=1e-6)
    assert metrics["mse_original"] == pytest.approx(float(((err * 4.0) ** 2).mean()), rel=1e-5)
    total, count = task.loss(jnp.asarray(pred), batch)
    assert count == 2 * 5 and total == pytest.approx(float((err**2).sum()), rel=1e-5)
