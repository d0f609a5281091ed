#!/usr/bin/env python
"""Images per second of the training input pipeline, and the padded shapes of DETR's COCO batches.

  python benchmarks/input_pipeline.py --dataset imagenet2012 --workers 0,1,2 [--augment deit]
  python benchmarks/input_pipeline.py --dataset coco            # padded-shape statistics

imagenet2012: writes a synthetic imagenet2012 in the catalog's format (tfds array_record, the
features of the real builder: JPEG `image`, `label`, `file_name`) into a temporary data dir, or
`--data-dir`, where it is kept and reused: `--images` JPEGs of ImageNet-like sizes (500 x 375,
500 x 333, 375 x 500, 500 x 400, 640 x 480, 400 x 400) cut from the two photographs scikit-learn
ships, tinted, flipped and given a little noise, at JPEG quality 95: about 100 KB each, like
ImageNet's training JPEGs (~110 KB on average), so that decoding costs what theirs costs.

Then, for each grain worker count N, it times `data.make_dataset` on the train split (the
pipeline `launch.py train` builds: decode, random-resized crop, flip, normalize, batch; with
`--augment deit` also RandAugment rand-m9-mstd0.5-inc1, bicubic resampling and random erasing
0.25) and prints one JSON line: images/s over `--batches` batches after `--warmup`, and the CPU
seconds that this process and its workers spent meanwhile (images per CPU-second: the per-core
rate, which other load on the machine changes little). N = 0 computes batches in the main
process with `--threads` read threads (0: in the consuming thread alone, one core); N > 0
starts N worker processes, each computing whole batches with its own read threads.

coco: no image is read. Over an epoch of COCO-like image sizes (an assumed mix, printed with the
results: 98% with a longer side of 640, aspect ratios 4:3 50%, 3:2 25%, uniform 1 to 1.8 20%,
16:9 5%, 22% portrait; 5,000 of them for validation), it draws DETR's training (evaluation)
geometry for every image and prints, for each
global batch size and padding multiple, how many distinct padded shapes an epoch produces and
how many pixels they hold, relative to exact padding and to the images' own.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = [(500, 375), (500, 333), (375, 500), (500, 400), (640, 480), (400, 400)]  # (w, h)
VERSION = "5.1.0"  # the catalog's imagenet2012 version
DEIT = {
    "randaugment": "rand-m9-mstd0.5-inc1",
    "random_erase": 0.25,
    "interpolation": "bicubic",
}


def synthetic_jpegs(count: int, seed: int = 0):
    """(JPEG bytes, label) of `count` photographs-like images: crops of scikit-learn's two
    photographs, resized to ImageNet-like sizes, tinted, sometimes mirrored."""
    import sklearn.datasets
    from PIL import Image

    folder = Path(sklearn.datasets.__file__).parent / "images"
    photos = [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % 2]
        w, h = SIZES[i % len(SIZES)]
        cw = int(rng.integers(200, photo.width))
        ch = min(photo.height, int(cw * h / w))
        left, top = (
            int(rng.integers(0, photo.width - cw + 1)),
            int(rng.integers(0, photo.height - ch + 1)),
        )
        image = photo.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BICUBIC)
        # Sensor-like noise gives the upscaled crops a photograph's texture, and its file size.
        pixels = np.asarray(image, np.float32) * rng.uniform(0.7, 1.3, 3)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        yield buf.getvalue(), int(rng.integers(0, 1000))


def write_imagenet(data_dir: Path, count: int) -> dict:
    """The synthetic imagenet2012 in `data_dir` (built once); returns its JPEG statistics."""
    import tensorflow_datasets as tfds

    stats_file = data_dir / "imagenet2012" / VERSION / "synthetic_stats.json"
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text())
        if stats["images"] == count:
            return stats
        raise SystemExit(f"{data_dir} holds a synthetic imagenet2012 of {stats['images']} images")

    class Imagenet2012(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """The catalog builder's features, with generated JPEGs."""

        name = "imagenet2012"
        VERSION = tfds.core.Version(VERSION)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(num_classes=1000),
                        "file_name": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {
                "train": self._generate_examples(count),
                "validation": self._generate_examples(64),
            }

        def _generate_examples(self, n):
            for i, (jpeg, label) in enumerate(synthetic_jpegs(n, seed=n)):
                yield i, {"image": jpeg, "label": label, "file_name": f"synthetic_{i}.JPEG"}

    builder = Imagenet2012(data_dir=str(data_dir), file_format="array_record")
    tfds.display_progress_bar(False)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP
        )
    )
    sizes = [len(jpeg) for jpeg, _ in synthetic_jpegs(min(count, 200), seed=count)]
    stats = {"images": count, "mean_jpeg_kb": round(float(np.mean(sizes)) / 1024, 1)}
    stats_file.write_text(json.dumps(stats))
    return stats


def time_pipeline(args, data_dir: Path, workers: int, augment: str) -> dict:
    from attn_jax import data

    cfg = {
        "name": "imagenet2012",
        "data_dir": str(data_dir),
        "augment": True,
        "image_size": args.image_size,
        "worker_count": workers,
        "read_threads": args.threads,
        **(DEIT if augment == "deit" else {}),
    }
    ds = data.make_dataset(cfg, "train", train=True, global_batch_size=args.batch, seed=0)
    it = iter(ds)
    for _ in range(args.warmup):
        next(it)
    start, cpu = time.perf_counter(), process_tree_cpu()
    for _ in range(args.batches):
        batch = next(it)
    seconds = time.perf_counter() - start
    cpu = process_tree_cpu() - cpu
    assert batch["image"].shape == (args.batch, args.image_size, args.image_size, 3)
    images = args.batch * args.batches
    return {
        "benchmark": "input_pipeline",
        "dataset": "imagenet2012",
        "augment": augment,
        "workers": workers,
        "threads": args.threads,
        "batch": args.batch,
        "image_size": args.image_size,
        "images_per_sec": round(images / seconds, 1),
        "batches": args.batches,
        "seconds": round(seconds, 2),
        # CPU time of this process and its workers over the timed batches: images per
        # CPU-second is the per-core rate, which other load on the machine does not change much.
        "cpu_s": round(cpu, 2),
        "images_per_cpu_s": round(images / cpu, 1),
        "cpus": os.cpu_count(),
        "load_avg": round(os.getloadavg()[0], 2),
    }


def process_tree_cpu() -> float:
    """User + system CPU seconds of this process and every live descendant (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats, children = {}, collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        # After the command name: state, ppid, ... utime and stime are fields 14 and 15 of stat.
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
        children[int(fields[1])].append(int(entry.name))
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def coco_like_sizes(n: int, rng) -> np.ndarray:
    """(h, w) of n images drawn from the assumed COCO-like mix (module docstring)."""
    long = np.where(rng.random(n) < 0.98, 640, rng.integers(200, 640, n))
    r = rng.random(n)
    aspect = np.select(
        [r < 0.5, r < 0.75, r < 0.95], [4 / 3, 3 / 2, rng.uniform(1.0, 1.8, n)], 16 / 9
    )
    short = np.round(long / aspect).astype(int)
    portrait = rng.random(n) < 0.22
    return np.stack([np.where(portrait, long, short), np.where(portrait, short, long)], 1)


def coco_shapes(args) -> None:
    from attn_jax.data import detr_multiscale as D

    rng = np.random.default_rng(0)
    sizes = coco_like_sizes(args.coco_images, rng)
    u = rng.random((len(sizes), D.DRAWS))
    for split, count in (("train", len(sizes)), ("validation", 5_000)):
        recipe = D.make_recipe(800)
        hw = np.asarray(
            [
                (g.height, g.width)
                for g in (
                    D.train_geometry(tuple(s), v, recipe)
                    if split == "train"
                    else D.eval_geometry(tuple(s), recipe)
                    for s, v in zip(sizes[:count], u[:count], strict=True)
                )
            ]
        )
        for batch in args.coco_batches:
            n = len(hw) - len(hw) % batch
            largest = hw[:n].reshape(-1, batch, 2).max(axis=1)  # [batches, 2]
            real = hw[:n].prod(-1).sum()
            exact = largest.prod(-1).sum() * batch
            for multiple in args.pad_multiples:
                r = dataclasses.replace(recipe, pad_multiple=multiple)
                padded = np.vectorize(r.padded)(largest)
                shapes = collections.Counter(map(tuple, padded.tolist()))
                pixels = padded.prod(-1).sum() * batch
                print(
                    json.dumps(
                        {
                            "benchmark": "detr_padding",
                            "split": split,
                            "images": n,
                            "batch": batch,
                            "pad_multiple": multiple,
                            "distinct_shapes": len(shapes),
                            "pixels_vs_exact": round(pixels / exact, 3),
                            "pixels_vs_images": round(pixels / real, 3),
                            "commonest": [list(s) for s, _ in shapes.most_common(3)],
                        }
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["imagenet2012", "coco"], default="imagenet2012")
    parser.add_argument("--workers", default="0,1,2", help="grain worker counts, comma-separated")
    parser.add_argument("--augment", default="none,deit", help="none and/or deit, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="read threads per process")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=1024, help="synthetic training JPEGs")
    parser.add_argument("--data-dir", default=None, help="keep the synthetic dataset here")
    parser.add_argument("--coco-images", type=int, default=118_287)
    parser.add_argument(
        "--coco-batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64]
    )
    parser.add_argument(
        "--pad-multiples", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128, 256]
    )
    args = parser.parse_args()
    if args.dataset == "coco":
        coco_shapes(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        stats = write_imagenet(data_dir, args.images)
        print(
            json.dumps(
                {
                    "benchmark": "input_pipeline",
                    "synthetic_imagenet": stats,
                    "build_s": round(time.perf_counter() - start, 1),
                }
            ),
            file=sys.stderr,
        )
        for augment in args.augment.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                print(
                    json.dumps({**time_pipeline(args, data_dir, workers, augment), **stats}),
                    flush=True,
                )


if __name__ == "__main__":
    main()
