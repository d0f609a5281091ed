"""Itti, Koch and Niebur 1998 saliency of real photographs: an experiment that trains nothing.

The photos are the ones scikit-learn ships (china.jpg, flower.jpg), plus a few of scikit-image's
where it is installed. `program = "saliency"` makes `launch.py run` call
attn_jax/programs/saliency_photos.py instead of the trainer; it writes
plots/<photo>_maps.png (photo, conspicuity maps I, C, O and the saliency map S) and
plots/<photo>_overlay.png (S over the photo, first fixation circled). Seconds on 2 CPU cores.

  python launch.py run --config experiments/saliency_photos.py --workdir runs/saliency_photos
  python launch.py run --config experiments/saliency_photos.py --config.sources="('sklearn',)"
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "saliency_photos"
    c.program = "saliency"
    c.sources = ("sklearn", "skimage")  # skimage is skipped where it is not installed
    c.overlay_alpha = 0.55
    return c
