"""Image classification: softmax cross-entropy with label smoothing, mixup/cutmix, top-1 and top-5 accuracy."""

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    """Batches hold `image [B, H, W, C]` float, `label [B]` int and `mask [B]` (1 = real example).

    `mixup_alpha` / `cutmix_alpha` > 0 mix pairs of training examples (Zhang et al. 2018; Yun et al. 2019) with
    probability `mix_prob`; when both are on, each batch uses one of them with probability `switch_prob` for cutmix.
    """

    num_classes: int
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    name: str = "classification"
    input_keys: tuple[str, ...] = ("images",)

    def model_inputs(self, batch):
        return {"images": batch["image"]}

    def _targets(self, batch):
        if "soft_label" in batch:
            return batch["soft_label"]
        return jax.nn.one_hot(batch["label"], self.num_classes)

    def prepare_train_batch(self, batch, rng):
        """Mixes the (masked) batch with a permutation of itself; adds `soft_label [B, num_classes]`."""
        if self.mixup_alpha <= 0 and self.cutmix_alpha <= 0:
            return batch
        images, targets = batch["image"], jax.nn.one_hot(batch["label"], self.num_classes)
        k_apply, k_switch, k_mix, k_cut, k_box = jax.random.split(rng, 5)
        # Pair each example with its neighbour (a roll keeps it exact under any batch sharding).
        other_images, other_targets = jnp.roll(images, 1, axis=0), jnp.roll(targets, 1, axis=0)
        lam_mix = jax.random.beta(k_mix, self.mixup_alpha, self.mixup_alpha) if self.mixup_alpha > 0 else 1.0
        lam_cut = jax.random.beta(k_cut, self.cutmix_alpha, self.cutmix_alpha) if self.cutmix_alpha > 0 else 1.0
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = jax.random.bernoulli(k_switch, self.switch_prob)
        else:
            use_cutmix = jnp.asarray(self.cutmix_alpha > 0)
        # Cutmix: paste a box of area (1 - lam) from the partner; lam is then the exact kept area.
        _, h, w, _ = images.shape
        ratio = jnp.sqrt(1.0 - lam_cut)
        cy, cx = jax.random.randint(k_box, (2,), 0, jnp.array([h, w]))
        bh, bw = (ratio * h).astype(jnp.int32), (ratio * w).astype(jnp.int32)
        ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
        box = (jnp.abs(ys - cy) * 2 < bh) & (jnp.abs(xs - cx) * 2 < bw)
        cut_lam = 1.0 - box.mean()
        cut_images = jnp.where(box[None, :, :, None], other_images, images)
        mix_images = lam_mix * images + (1.0 - lam_mix) * other_images
        lam = jnp.where(use_cutmix, cut_lam, lam_mix)
        mixed = jnp.where(use_cutmix, cut_images, mix_images)
        apply = jax.random.bernoulli(k_apply, self.mix_prob)
        lam = jnp.where(apply, lam, 1.0)
        images = jnp.where(apply, mixed, images).astype(images.dtype)
        return {**batch, "image": images, "soft_label": lam * targets + (1.0 - lam) * other_targets}

    def loss(self, outputs, batch):
        """Masked mean cross-entropy; returns (sum over real examples, number of real examples)."""
        targets = self._targets(batch)
        if self.label_smoothing > 0:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        per_example = optax.softmax_cross_entropy(outputs.astype(jnp.float32), targets)
        mask = batch["mask"].astype(jnp.float32)
        return jnp.sum(per_example * mask), jnp.sum(mask)

    def metrics(self, outputs, batch):
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.sum(mask)
        logits = outputs.astype(jnp.float32)
        labels = batch["label"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        # Rank of the true class, ties broken by class index as argmax breaks them (so constant logits are not
        # "correct" for every label): top-k correct when the rank is below k.
        true_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)
        before = jnp.arange(logits.shape[1])[None, :] < labels[:, None]
        rank = jnp.sum((logits > true_logit) | ((logits == true_logit) & before), axis=1)
        out = {
            "loss": (jnp.sum(loss * mask), count),
            "accuracy": (jnp.sum((rank < 1) * mask), count),
        }
        if self.num_classes > 5:
            out["top5"] = (jnp.sum((rank < 5) * mask), count)
        return out
