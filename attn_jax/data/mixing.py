"""Mixup (Zhang, Cisse, Dauphin and Lopez-Paz 2018, "mixup: Beyond empirical risk minimization")
and CutMix (Yun, Han, Oh, Chun, Choe and Yoo 2019, "CutMix: Regularization strategy to train
strong classifiers with localizable features") on the device, as DeiT trains with them: timm's
Mixup in mode "batch" (one draw per batch), with its label smoothing.

With probability `prob` the batch is mixed with itself in reverse order (row i with row B-1-i):
CutMix with probability `switch_prob` when both alphas are positive, else Mixup; the mixing
ratio lam ~ Beta(alpha, alpha) of the chosen method.

- Mixup: x = lam x + (1 - lam) x_partner.
- CutMix: a box of sides int(H sqrt(1 - lam)) x int(W sqrt(1 - lam)) centred at a uniform pixel
  (cy, cx), clipped to the image, is pasted from the partner; lam becomes 1 - the clipped box's
  area fraction (timm's "correct_lam").
- Labels: smoothed one-hot y (1 - s + s/K on the class, s/K elsewhere), then
  lam y + (1 - lam) y_partner; they sum to 1.

`mix_batch` is pure jnp with static shapes: it runs inside the jitted train step on a batch
sharded over devices. Pairing row i with row B-1-i of the global batch moves every image across
devices; `groups=G` pairs rows within G equal contiguous slices instead (reversed within each),
so with G = the number of data shards each device mixes only its own rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """float32 [B, K]: 1 - smoothing + smoothing / K on the class, smoothing / K elsewhere."""
    off = smoothing / num_classes
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (1.0 - smoothing) + off


def partner(x: jax.Array, groups: int = 1) -> jax.Array:
    """x's rows in the order they are mixed with: reversed within `groups` contiguous slices."""
    b = x.shape[0]
    assert b % groups == 0, (b, groups)
    grouped = x.reshape(groups, b // groups, *x.shape[1:])  # [G, B/G, ...]
    return jnp.flip(grouped, axis=1).reshape(x.shape)


def cutmix_box(
    key: jax.Array, lam: jax.Array, height: int, width: int
) -> tuple[jax.Array, jax.Array]:
    """(box, corrected lam) of CutMix: box = int32 [4] (y0, y1, x0, x1), the rows [y0, y1) and
    columns [x0, x1) pasted; corrected lam = 1 - the box's area / (H W)."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (), 0, height)
    cx = jax.random.randint(kx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + (cut_h + 1) // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + (cut_w + 1) // 2, 0, width)
    area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32)
    return jnp.stack([y0, y1, x0, x1]), 1.0 - area / (height * width)


def mix_batch(
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
    prob: float = 1.0,
    groups: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Mixup or CutMix of a batch with itself reversed, and its soft labels (see the module).

    Args:
        images: [B, H, W, C] (any float dtype, kept).
        labels: int [B].
        key: PRNG key of this step's mixing.
        num_classes: K.
        mixup_alpha: Beta parameter of Mixup; 0 disables it.
        cutmix_alpha: Beta parameter of CutMix; 0 disables it.
        switch_prob: probability of CutMix when both are enabled.
        label_smoothing: s of the smoothed one-hot labels.
        prob: probability that the batch is mixed at all.
        groups: rows are paired within this many contiguous slices of the batch (B % groups == 0).

    Returns:
        (images [B, H, W, C], soft labels float32 [B, K]). With both alphas 0 the images are
        returned unchanged and the labels are the smoothed one-hot labels.
    """
    targets = smooth_one_hot(labels, num_classes, label_smoothing)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    k_apply, k_switch, k_lam, k_box = jax.random.split(key, 4)
    height, width = images.shape[1:3]
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(k_switch) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    # Beta(a, a) = X / (X + Y) for X, Y ~ Gamma(a), in log space so that small alphas cannot
    # give 0 / 0; one gamma draw for both methods (gamma sampling is slow to compile).
    alphas = [mixup_alpha or 1.0] * 2 + [cutmix_alpha or 1.0] * 2
    log_gamma = jax.random.loggamma(k_lam, jnp.asarray(alphas, jnp.float32))
    lam_mixup = jax.nn.sigmoid(log_gamma[0] - log_gamma[1])
    lam_cutmix = jax.nn.sigmoid(log_gamma[2] - log_gamma[3])
    lam = jnp.where(use_cutmix, lam_cutmix, lam_mixup)
    lam = jnp.where(jax.random.uniform(k_apply) < prob, lam, 1.0)
    (y0, y1, x0, x1), cut_lam = cutmix_box(k_box, lam, height, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    pasted = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # [H, W]
    # One per-pixel weight of the image itself covers both: lam everywhere, or 0 in the box.
    weight = jnp.where(use_cutmix, (~pasted).astype(jnp.float32), lam)
    weight = weight.astype(images.dtype)[None, :, :, None]
    mixed = images * weight + partner(images, groups) * (1 - weight)
    lam = jnp.where(use_cutmix, cut_lam, lam)
    return mixed, lam * targets + (1.0 - lam) * partner(targets, groups)
