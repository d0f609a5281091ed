"""The jigsaw puzzle pretext task: Noroozi & Favaro 2016, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles" (ECCV 2016), sec. 3 and Algorithm 1.

An image is cut into a grid x grid set of tiles, the tiles are put back in the order of one
permutation drawn from a FIXED set of P permutations, and the network predicts which of the P it
was (a P-way classification; labels are never read). The set is chosen so that its permutations
are far apart in Hamming distance (the number of tiles two permutations place differently): sec.
3.2 finds that the task, and the features, improve with the set's minimal distance. Algorithm 1
builds the set greedily from all n! permutations of n = grid^2 tiles; this one does the same
but takes, at each step, the permutation whose MINIMAL distance to the chosen ones is largest
(the paper's criterion, the sum of the distances, breaks ties), so the set's minimal distance is
what the greedy step guarantees: for 2 x 2 tiles 4 permutations at distance 4, 12 at distance 3
(both optimal), all 24 at distance 2.

Tile t of the shuffled image is tile perm[t] of the original (`shuffle_tiles`); `unshuffle_tiles`
with the same permutation gives the image back. The paper's siamese "context-free network" sees
each tile alone, so that low-level cues at the tile borders cannot solve the puzzle; here one ViT
sees the whole shuffled image (its patches never straddle two tiles when the tile side is a
multiple of the patch side), so the encoder has the shape of the other pretraining runs and loads
into the same fine-tuning and probe configs.

The permutation of each training example is drawn from the step's key folded with a fixed tag (a
resumed run draws the same); evaluation derives each image's permutation from a fixed seed and the
image's own pixels, so every evaluation scores the same puzzles whatever the batching.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attn_jax.errors import UserError
from attn_jax.tasks.classification import Classification, masked_accuracy_sums

_PERMUTATION_TAG = 0x4A494753  # "JIGS": the permutation stream differs from dropout's
_MAX_TILES = 9  # 9! = 362,880 candidate permutations is as far as the greedy search goes


class JigsawConfigError(UserError, ValueError):
    """A jigsaw setting that cannot work with the model or the data; one line."""


def hamming_distances(perms: np.ndarray) -> np.ndarray:
    """[P, P] number of positions at which each pair of permutations [P, n] differ."""
    perms = np.asarray(perms)
    return (perms[:, None, :] != perms[None, :, :]).sum(-1)


def max_hamming_permutations(num_tiles: int, count: int, seed: int = 0) -> np.ndarray:
    """A fixed set of `count` permutations of `num_tiles` tiles, greedily spread out in Hamming
    distance (module docstring).

    Args:
      num_tiles: n, at most 9.
      count: P, at most n!.
      seed: renames the tiles of the set found from the identity (Algorithm 1 starts from a
        random permutation instead; a renaming gives the same distances whatever the seed).

    Returns:
      int32 [P, n]; row k is permutation k (tile t of a shuffled image is tile row[t]).

    Raises:
      JigsawConfigError: n above 9, or P outside 1..n!.
    """
    if not 1 <= num_tiles <= _MAX_TILES:
        raise JigsawConfigError(
            f"jigsaw with {num_tiles} tiles: the permutation search handles 1 to {_MAX_TILES} "
            "tiles (grid 1 to 3)"
        )
    total = math.factorial(num_tiles)
    if not 1 <= count <= total:
        raise JigsawConfigError(
            f"jigsaw num_permutations={count} must be between 1 and {total} ({num_tiles}!) for "
            f"{num_tiles} tiles"
        )
    candidates = np.asarray(list(itertools.permutations(range(num_tiles))), np.int8)
    chosen = [0]  # the identity; the greedy steps' ties are broken by the lowest index
    min_dist = np.full(total, num_tiles + 1, np.int64)
    sum_dist = np.zeros(total, np.int64)
    taken = np.zeros(total, bool)
    # The sum is < count * n + 1, so this score orders by min distance first, then by the sum.
    weight = count * num_tiles + 1
    while True:
        last = candidates[chosen[-1]]
        d = (candidates != last).sum(-1)
        min_dist = np.minimum(min_dist, d)
        sum_dist += d
        taken[chosen[-1]] = True
        if len(chosen) == count:
            break
        score = np.where(taken, -1, min_dist * weight + sum_dist)
        chosen.append(int(np.argmax(score)))
    # Renaming the tiles (p -> relabel[p]) keeps every distance, so the seed changes which
    # permutations make up the set but not how far apart they are.
    relabel = np.random.default_rng(seed).permutation(num_tiles)
    return relabel[candidates[chosen]].astype(np.int32)


def _tiles(images: jax.Array, grid: int) -> jax.Array:
    # [B, H, W, C] -> [B, grid*grid, H/grid, W/grid, C], tiles in row-major order
    b, h, w, c = images.shape
    th, tw = h // grid, w // grid
    x = images.reshape(b, grid, th, grid, tw, c)
    return jnp.einsum("bihjwc->bijhwc", x).reshape(b, grid * grid, th, tw, c)


def _untiles(tiles: jax.Array, grid: int) -> jax.Array:
    # [B, grid*grid, th, tw, C] -> [B, grid*th, grid*tw, C]
    b, _, th, tw, c = tiles.shape
    x = jnp.einsum("bijhwc->bihjwc", tiles.reshape(b, grid, grid, th, tw, c))
    return x.reshape(b, grid * th, grid * tw, c)


def shuffle_tiles(images: jax.Array, perms: jax.Array, grid: int) -> jax.Array:
    """Puts tile perms[b, t] of image b at tile position t.

    Args:
      images: [B, H, W, C], H and W divisible by `grid`.
      perms: int [B, grid*grid], one permutation per image.
      grid: tiles per side.

    Returns:
      the shuffled images, [B, H, W, C].
    """
    tiles = _tiles(images, grid)
    picked = jnp.take_along_axis(tiles, perms[:, :, None, None, None], axis=1)
    return _untiles(picked, grid)


def unshuffle_tiles(images: jax.Array, perms: jax.Array, grid: int) -> jax.Array:
    """The inverse of `shuffle_tiles` with the same permutations."""
    return shuffle_tiles(images, jnp.argsort(perms, axis=-1), grid)


class Jigsaw:
    """Predict which of P tile permutations shuffled the image: `model(images) -> (logits [B, P],
    aux)` on image batches {"image" [B, H, W, C], "mask" bool [B]} (labels unused).

    Args:
      num_classes: ignored (the dataset's classes); the model's head must have P outputs.
      grid: tiles per side (2: 4 tiles, 24 permutations; 3: 9 tiles).
      num_permutations: P, the size of the permutation set.
      permutation_seed: the seed of the set's first permutation.
      eval_seed: the seed of the evaluation puzzles.
    """

    evaluation = "jigsaw"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("accuracy", "loss")

    def __init__(
        self,
        num_classes: int = 0,
        grid: int = 2,
        num_permutations: int = 24,
        permutation_seed: int = 0,
        eval_seed: int = 0,
    ):
        del num_classes
        if grid < 1:
            raise JigsawConfigError(f"jigsaw grid={grid} must be at least 1")
        self.grid = int(grid)
        self.permutations = max_hamming_permutations(
            self.grid**2, int(num_permutations), int(permutation_seed)
        )
        self.eval_seed = int(eval_seed)

    @property
    def num_permutations(self) -> int:
        return int(self.permutations.shape[0])

    def init_inputs(self, spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: an image batch of size 1."""
        if spec.image_shape is None:
            raise JigsawConfigError(f"dataset {spec.name!r} has no images; jigsaw needs images")
        h, w, _ = spec.image_shape
        if h % self.grid or w % self.grid:
            raise JigsawConfigError(
                f"jigsaw grid={self.grid} does not divide the {h}x{w} images: set task.grid to a "
                "divisor of both sides (or data.image_size to a multiple of it)"
            )
        return (jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32),)

    def shuffle(self, images: jax.Array, labels: jax.Array) -> jax.Array:
        """The images with their tiles in the order of permutation `labels` [B]."""
        return shuffle_tiles(images, jnp.asarray(self.permutations)[labels], self.grid)

    def eval_labels(self, images: jax.Array) -> jax.Array:
        """One permutation index per image, derived from its pixels: the same puzzle for an image
        in every evaluation, whatever its batch, position or device."""
        b = images.shape[0]
        quantized = jnp.round(images.reshape(b, -1) * 1024).astype(jnp.int32).astype(jnp.uint32)
        positions = jnp.arange(1, quantized.shape[-1] + 1, dtype=jnp.uint32)
        digest = jnp.sum(quantized * positions * jnp.uint32(2654435761), axis=-1)
        keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(self.eval_seed), digest)
        draw = lambda k: jax.random.randint(k, (), 0, self.num_permutations)
        return jax.vmap(draw)(keys)

    def _logits(self, model, params, images, labels, *, train: bool, rng=None) -> jax.Array:
        rngs = {"dropout": rng} if rng is not None else {}
        logits, _ = model.apply(
            {"params": params}, self.shuffle(images, labels), train=train, rngs=rngs
        )
        if logits.ndim != 2 or logits.shape[-1] != self.num_permutations:
            raise JigsawConfigError(
                f"jigsaw needs one logit per permutation, [B, {self.num_permutations}], the model "
                f"gives {tuple(logits.shape)}: set model.num_classes={self.num_permutations}"
            )
        return logits.astype(jnp.float32)

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean cross-entropy over the real examples of the permutation index; its accuracy."""
        images = batch["image"]
        perm_key = jax.random.fold_in(rng, _PERMUTATION_TAG)
        labels = jax.random.randint(perm_key, (images.shape[0],), 0, self.num_permutations)
        logits = self._logits(model, params, images, labels, train=train, rng=rng)
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.maximum(mask.sum(), 1.0)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        loss = (nll * mask).sum() / count
        return loss, {"loss": loss, "accuracy": (correct * mask).sum() / count}

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the real examples, on the fixed evaluation puzzles (`eval_labels`)."""
        images = batch["image"]
        labels = self.eval_labels(images)
        logits = self._logits(model, params, images, labels, train=False)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return masked_accuracy_sums(logits, labels, nll, batch["mask"])

    finalize = staticmethod(Classification.finalize)


__all__ = [
    "Jigsaw",
    "JigsawConfigError",
    "hamming_distances",
    "max_hamming_permutations",
    "shuffle_tiles",
    "unshuffle_tiles",
]
