"""The Itti-Koch saliency map (attn_jax.attention.saliency; Itti, Koch and Niebur 1998) of real
photographs: the two that scikit-learn ships (`sklearn.datasets.load_sample_images`: china.jpg,
flower.jpg) and, where scikit-image is installed, a few of the images it bundles.

For each photo it writes into `<workdir>/plots/`:
  <name>_maps.png     the photo, the conspicuity maps I-bar, C-bar, O-bar (eqs. 5-7) and S (eq. 8)
  <name>_overlay.png  S upsampled over the photo, the first fixation (max of S) marked
and returns the first fixation of each photo in its pixel coordinates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from attn_jax.attention.saliency import itti_koch_saliency_jit, saliency_peak
from attn_jax.errors import UserError
from attn_jax.figures.saliency import plot_saliency

SOURCES = ("sklearn", "skimage")
# Photographs bundled with scikit-image itself (no download); others are fetched on first use.
SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


class SaliencyConfigError(UserError, ValueError):
    """A bad field of the saliency program's config; one line."""


def sample_photos(sources: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{name: uint8 [H, W, 3]} of the photos of the installed packages in `sources`.

    scikit-image is optional: when it is not importable (or an image is missing) it is skipped.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise SaliencyConfigError(
            f"unknown image sources {unknown}; valid: {list(SOURCES)}, e.g. "
            f"--config.sources=\"('sklearn',)\""
        )
    photos: dict[str, np.ndarray] = {}
    if "sklearn" in sources:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for filename, image in zip(bunch.filenames, bunch.images, strict=True):
            photos[Path(filename).stem] = np.asarray(image)
    if "skimage" in sources:
        try:
            from skimage import data as skimage_data
        except ImportError:
            skimage_data = None
        for name in SKIMAGE_IMAGES if skimage_data is not None else ():
            try:
                image = np.asarray(getattr(skimage_data, name)())
            except Exception:  # noqa: BLE001 - a missing or undownloadable image is skipped
                continue
            if image.ndim == 3 and image.shape[-1] >= 3:
                photos[f"skimage_{name}"] = image[..., :3]
    return photos


SCALE_4_STRIDE = 16  # pyramid scale 4 keeps every 16th pixel: its (i, j) sits at (16 i, 16 j)


def run(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Saliency maps of the configured photos, written as PNG into `workdir/plots`.

    Config fields: `sources` (tuple of "sklearn", "skimage"), `overlay_alpha` (0..1).

    Returns:
      {"images": names, "first_fixation": {name: [row, col] in photo pixels}, "plots": count,
       "seconds_per_image": mean compiled run time, "compile_seconds": first call of each shape}.
    """
    sources = tuple(config.get("sources", ("sklearn",)))
    alpha = float(config.get("overlay_alpha", 0.5))
    if not 0.0 <= alpha <= 1.0:
        raise SaliencyConfigError(f"overlay_alpha must lie in [0, 1], got {alpha}")
    photos = sample_photos(sources)
    if not photos:
        raise SaliencyConfigError(f"no photographs found in sources {list(sources)}")
    out_dir = Path(workdir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)

    fixations, written, run_times, compile_time = {}, [], [], 0.0
    seen_shapes = set()
    for name, photo in photos.items():
        image = jnp.asarray(photo, jnp.float32) / 255.0
        start = time.perf_counter()
        maps = jax.block_until_ready(itti_koch_saliency_jit(image))
        if image.shape in seen_shapes:
            run_times.append(time.perf_counter() - start)
        else:  # the first call of a shape compiles; time a second, compiled call
            seen_shapes.add(image.shape)
            compile_time += time.perf_counter() - start
            start = time.perf_counter()
            jax.block_until_ready(itti_koch_saliency_jit(image))
            run_times.append(time.perf_counter() - start)
        maps = {k: np.asarray(v) for k, v in maps.items()}
        row, col = (int(v) for v in saliency_peak(jnp.asarray(maps["saliency"])))
        peak = (row * SCALE_4_STRIDE, col * SCALE_4_STRIDE)
        fixations[name] = list(peak)
        written += plot_saliency(name, photo, maps, peak, out_dir, alpha)
    return {
        "images": list(photos),
        "first_fixation": fixations,
        "plots": len(written),
        "seconds_per_image": float(np.mean(run_times)),
        "compile_seconds": compile_time,
    }
