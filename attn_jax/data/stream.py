"""Which examples make up process p's part of global batch k: the index stream shared by the
image and the text pipelines (see pipeline.py for the design).

Training reads an infinite stream whose epoch e is a permutation of the split drawn from
(seed, e); global batch k is stream positions [k*B, (k+1)*B), and process p of P takes
[k*B + p*b, k*B + (p+1)*b), b = B // P. Evaluation reads positions in stored order, and those past
the end of the split are padding.

Repeated augmentation (Hoffer et al. 2020, "Augment your batch"; DeiT's RASampler) with r
repeats: slot j of global batch k holds example t = k*B/r + (j mod B/r) of the shuffled stream,
so each example fills r slots B/r apart, which fall on different devices once there are r of them
(the batch is split into contiguous per-device slices), as RASampler spreads its copies over
processes. Augmentation is drawn from the slot's position, so the copies differ; an epoch of N
positions then holds N/r distinct examples, and r epochs one pass over the split.
"""

from __future__ import annotations

import threading

import numpy as np

from attn_jax.data import transforms as T

_SHUFFLE = 1  # the purpose folded into the shuffle keys (pipeline.py folds others)


class BatchPositions:
    """Process `process_index`'s stream positions and example indices of global batch k."""

    def __init__(
        self,
        num_examples: int,
        *,
        train: bool,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
        repeats: int = 1,
    ):
        assert repeats == 1 or (train and global_batch_size % repeats == 0), repeats
        self.repeats = repeats
        self.num_examples = num_examples
        self.train = train
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self._offset = process_index * self.local_batch_size
        self._seed = seed
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable for grain worker processes: locks are not
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._permutations.get(epoch)
            if perm is None:
                perm = T.random_permutation(
                    T.fold_key(self._seed, _SHUFFLE, epoch), self.num_examples
                )
                self._permutations[epoch] = perm
                # Batches run at most two epochs at once unless B > N; a few suffice.
                for old in sorted(self._permutations)[:-4]:
                    del self._permutations[old]
            return perm

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions int64 [b], valid bool [b], indices of the valid positions)."""
        start = step * self.global_batch_size + self._offset
        positions = np.arange(start, start + self.local_batch_size, dtype=np.int64)
        if self.train:
            stream = positions
            if self.repeats > 1:
                per = self.global_batch_size // self.repeats
                step_of, slot = np.divmod(positions, self.global_batch_size)
                stream = step_of * per + slot % per
            epochs, offsets = np.divmod(stream, self.num_examples)
            indices = np.empty_like(positions)
            for epoch in np.unique(epochs):
                at = epochs == epoch
                indices[at] = self._permutation(int(epoch))[offsets[at]]
            return positions, np.ones(self.local_batch_size, bool), indices
        valid = positions < self.num_examples
        return positions, valid, positions[valid]
