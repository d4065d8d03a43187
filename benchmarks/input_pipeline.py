"""Two-view images per second: keras_vicreg's tf.data pipeline against the released VICReg pipeline.

    bash benchmarks/released_pipeline_setup.sh          # once: .venv-released (torchvision)
    python benchmarks/input_pipeline.py [--images 2048] [--photos 512] [--batch-size 32]
        [--workers 2] [--rounds 2] [--stage-sample 128] [--antialias]
    python benchmarks/input_pipeline.py --in-memory grayscale [--batch-size 256] [--batches 40]
        [--photometric-device host|accelerator|both] [--routes in_memory,per_batch,per_image]

Both pipelines make VICReg's two asymmetric ImageNet views (random resized crop to 224, bicubic,
flip, colour jitter, grayscale, blur, solarization, normalisation) in batches from the same folder
of JPEG photographs at ImageNet sizes (`--photos` of them, long side 300 to 500 pixels, cut at
random from scikit-image's sample photographs, `skimage.data`, in one class subfolder per photo).

- keras_vicreg: `keras_vicreg.data.two_view_dataset(folder, batch, augmentation="imagenet")`, its
  tf.data thread pool limited to `--workers` threads.
- released: the released code's own pipeline as it runs, torchvision's `ImageFolder` + the released
  `TrainTransform` + a `DataLoader` with `--workers` worker processes, run by
  `benchmarks/released_pipeline.py` in `.venv-released` (torchvision is no dependency of this
  package), launched here as a subprocess; its figures come back as JSON on stdout.

The rounds alternate between the two. Per round: two-view images per second after a warm-up batch,
and CPU milliseconds per image (the process's threads and, for the released pipeline, its worker
processes): on a machine shared with other work the CPU time is steadier than the rates. Once per
pipeline, on `--stage-sample` images with `--workers` workers or threads, the CPU time per image of
each stage: read+decode, crop+resize, photometric (flip to normalisation), batching. For
keras_vicreg, a JPEG is decoded once for both views and cropped there (read+decode, with the views'
random draws), then resized (crop+resize), batched, and the photometric half runs per batch with
OpenCV's kernels, as in `two_view_dataset`; the stages are timed cumulatively (each pass one stage
longer, each stage the difference), and the header checks of the pixel budget are left out.

`--in-memory PRESET` times `two_view_dataset` alone on uint8 images held in memory:
Fashion-MNIST's 60,000 training images for "grayscale" at 28 pixels (from tfds if prepared, else
random), random 32x32x3 images for "small", random 256x320x3 for "imagenet" at 224; shuffle buffer
60,000. It prints the CPU time (all threads) and wall time per batch of each route of
`keras_vicreg.data.batching.choose_route`: the array itself (the demo's route), and a
`tf.data.Dataset` of its images augmented per batch or wholly per image, in turn; with
`--photometric-device accelerator` (or `both`) the host's part without the photometric half, as
`config.photometric_device="accelerator"` runs it (the train step's part is not timed).
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
)
_ASPECTS = (4 / 3, 3 / 4, 3 / 2, 2 / 3, 1.0)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASED_PYTHON = os.path.join(_ROOT, ".venv-released", "bin", "python")
RELEASED_SCRIPT = os.path.join(_ROOT, "benchmarks", "released_pipeline.py")


def make_photo_folder(root, count=512, seed=0):
    """Writes `count` JPEGs (quality 90) in `root/<photo>/`, long side 300-500; returns the paths.

    Each is a random region (half to all of the largest one of a random aspect ratio) of one of
    scikit-image's sample photographs, resized with Lanczos to a random long side.
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = {name: getattr(data, name)() for name in _PHOTOS}
    paths = []
    for index in range(count):
        name = _PHOTOS[index % len(_PHOTOS)]
        photo = photos[name]
        height, width = photo.shape[:2]
        aspect = _ASPECTS[rng.integers(len(_ASPECTS))]
        crop_w = min(width, round(height * aspect))
        crop_h = min(height, round(crop_w / aspect))
        fraction = rng.uniform(0.5, 1.0)
        crop_w, crop_h = max(1, round(crop_w * fraction)), max(1, round(crop_h * fraction))
        top = rng.integers(0, height - crop_h + 1)
        left = rng.integers(0, width - crop_w + 1)
        scale = rng.integers(300, 501) / max(crop_w, crop_h)
        size = (round(crop_w * scale), round(crop_h * scale))
        image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w])
        os.makedirs(os.path.join(root, name), exist_ok=True)
        path = os.path.join(root, name, f"{index:04d}.jpg")
        image.resize(size, Image.LANCZOS).save(path, quality=90)
        paths.append(path)
    return paths


def _thread_options(workers):
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = workers
    return options


def bench_tf(folder, images, batch_size, workers, antialias=False):
    """(two-view images per second, CPU ms per image) of `two_view_dataset` on the folder."""
    from keras_vicreg import data
    from keras_vicreg.data import transforms

    preset = transforms.get_augmentation("imagenet")
    views = [dataclasses.replace(v, antialias=antialias) for v in (preset.view_a, preset.view_b)]
    augmentation = dataclasses.replace(preset, view_a=views[0], view_b=views[1])
    dataset = data.two_view_dataset(folder, batch_size, augmentation=augmentation, seed=0)
    iterator = iter(dataset.repeat().with_options(_thread_options(workers)))
    next(iterator)  # warm-up: tracing, thread pools, autotuning
    start, cpu_start, done = time.perf_counter(), time.process_time(), 0
    while done < images:
        view_a, _ = next(iterator)
        done += int(view_a.shape[0])
    rate = done / (time.perf_counter() - start)
    return rate, 1000 * (time.process_time() - cpu_start) / done


def _pass_cpu(dataset, workers):
    """CPU ms of the second pass over a dataset (the first warms up graph optimisation, threads)."""
    dataset = dataset.with_options(_thread_options(workers))
    for _ in dataset:
        pass
    start = time.process_time()
    for _ in dataset:
        pass
    return 1000 * (time.process_time() - start)


def tf_stage_times(paths, sample, batch_size, workers):
    """Per stage, CPU ms per image of keras_vicreg's pipeline for 224-pixel views.

    As `two_view_dataset` runs it: per image, one decode for both views, the crops, their draws and
    the resizes; then the batch; then the photometric half per batch with OpenCV's kernels
    (`transforms.opencv_photometric`).
    """
    import tensorflow as tf

    from keras_vicreg.data import decode
    from keras_vicreg.data import transforms
    from keras_vicreg.data.transforms import draws
    from keras_vicreg.data.transforms import opencv_photometric

    augmentation = transforms.get_augmentation("imagenet")
    views = (augmentation.view_a, augmentation.view_b)
    paths = sorted(paths)[:sample]

    def read_decode(path, index):
        seed = tf.stack([tf.constant(0, tf.int64), tf.cast(index, tf.int64)])
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        crop_seeds, params_seeds = zip(*(transforms.split_view_seed(s) for s in seeds))
        crops = decode.decode_view_crops(tf.io.read_file(path), crop_seeds, views)
        return tuple(crops), tuple(draws.sample_view_uniforms(s) for s in params_seeds)

    def crop_resize(crops, uniforms):
        resized = tuple(transforms.resize_crop(c, v, scaled=False) for c, v in zip(crops, views))
        return resized, uniforms

    def photometric(images, uniforms):
        return opencv_photometric.apply_two_views(
            images[0], uniforms[0], images[1], uniforms[1], augmentation, 1.0 / 255.0
        )

    source = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths), tf.range(len(paths), dtype=tf.int64))
    )
    # Cumulative: each stage runs after those before it, as in the pipeline; its cost is the
    # difference from the one before.
    per_image = source.map(read_decode, num_parallel_calls=tf.data.AUTOTUNE)
    resized = per_image.map(lambda *e: crop_resize(*e), num_parallel_calls=tf.data.AUTOTUNE)
    batched = resized.batch(batch_size, drop_remainder=True)
    augmented = batched.map(photometric, num_parallel_calls=tf.data.AUTOTUNE)
    totals = [_pass_cpu(dataset, workers) for dataset in (per_image, resized, batched, augmented)]
    steps = dict(zip(("read_decode", "crop_resize", "batching", "photometric"),
                     np.diff([0.0] + totals) / len(paths)))
    return {**steps, "sample": len(paths)}


def run_released(folder, images, batch_size, workers, stage_sample=0):
    """The released pipeline's figures (`benchmarks/released_pipeline.py`'s JSON)."""
    command = [
        RELEASED_PYTHON,
        RELEASED_SCRIPT,
        folder,
        f"--images={images}",
        f"--batch-size={batch_size}",
        f"--workers={workers}",
        f"--stage-sample={stage_sample}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# Per preset: the images held in memory and the views' size (None: the preset's).
_IN_MEMORY = {
    "grayscale": ((60000, 28, 28, 1), 28),
    "small": ((50000, 32, 32, 3), None),
    "imagenet": ((512, 256, 320, 3), None),
}


def in_memory_images(preset):
    """Fashion-MNIST's training images for "grayscale" if tfds has them prepared, else random."""
    if preset == "grayscale":
        import tensorflow_datasets as tfds

        if tfds.builder("fashion_mnist").is_prepared():
            images = tfds.load("fashion_mnist", split="train", batch_size=-1)["image"]
            return images.numpy(), "Fashion-MNIST's training images"
    images = np.random.default_rng(0).integers(0, 256, _IN_MEMORY[preset][0], np.uint8)
    return images, "random uint8 images"


def bench_in_memory(images, preset, batch_size, batches, route, photometric_device="host"):
    """(CPU ms, wall ms) per batch of `two_view_dataset` on in-memory images, after 5 warm-up.

    `route` is one of `keras_vicreg.data.batching.ROUTES`: "in_memory" passes the array itself (the
    demo's route), "per_batch" and "per_image" a `tf.data.Dataset` of its images, augmented per
    batch or wholly per image. `photometric_device="accelerator"`: the host's part only, the crops
    (the photometric half then runs in the train step, not timed here).
    """
    import tensorflow as tf

    from keras_vicreg.data import batching
    from keras_vicreg.data import pretraining
    from keras_vicreg.data import transforms

    augmentation = transforms.get_augmentation(preset, _IN_MEMORY[preset][1])
    default = batching.BATCH_AUGMENT_MAX_PIXELS
    batching.BATCH_AUGMENT_MAX_PIXELS = 0 if route == "per_image" else default
    host = tf.convert_to_tensor(images)
    pairs = pretraining.two_view_dataset(
        host if route == "in_memory" else tf.data.Dataset.from_tensor_slices(host),
        batch_size,
        augmentation=augmentation,
        seed=0,
        shuffle_buffer=60000,
        photometric_device=photometric_device,
    )
    batching.BATCH_AUGMENT_MAX_PIXELS = default
    iterator = iter(pairs.repeat())
    for _ in range(5):  # warm-up: tracing, thread pools, autotuning, the shuffle buffer
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    cpu = time.process_time() - cpu_start
    return 1000 * cpu / batches, 1000 * (time.perf_counter() - start) / batches


def main_in_memory(args):
    images, what = in_memory_images(args.in_memory)
    print(
        f"{args.in_memory} preset on {len(images)} {what} of {images.shape[1:]}, batch "
        f"{args.batch_size}; load average {os.getloadavg()[0]:.1f} before the runs"
    )
    print("\n| round | route | photometric on | CPU ms per batch | wall ms per batch | "
          "CPU ms per pair |")
    print("|---|---|---|---|---|---|")
    devices = ("host", "accelerator") if args.photometric_device == "both" else (
        args.photometric_device,)
    for round_ in range(args.rounds):
        for route in args.routes.split(","):
            for device in devices:
                cpu, wall = bench_in_memory(
                    images, args.in_memory, args.batch_size, args.batches, route, device
                )
                print(
                    f"| {round_ + 1} | {route} | {device} | {cpu:.1f} | {wall:.1f} | "
                    f"{cpu / args.batch_size:.3f} |"
                )


def _stage_cells(stages):
    names = ("read_decode", "crop_resize", "photometric", "batching")
    return " | ".join(f"{stages[name]:.1f}" for name in names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2048, help="two-view images per round")
    parser.add_argument("--photos", type=int, default=512, help="JPEGs in the folder")
    parser.add_argument("--batch-size", type=int, default=None, help="32; 256 with --in-memory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--stage-sample", type=int, default=128, help="images timed per stage")
    parser.add_argument(
        "--antialias", action="store_true", help="also time keras_vicreg with antialias=True"
    )
    parser.add_argument(
        "--in-memory",
        choices=("grayscale", "small", "imagenet"),
        help="time two_view_dataset alone on in-memory images with this preset",
    )
    parser.add_argument("--batches", type=int, default=40, help="batches timed per round")
    parser.add_argument(
        "--photometric-device", choices=("host", "accelerator", "both"), default="host",
        help="with --in-memory: time the host's part with the photometric half on the host, "
        "without it (config.photometric_device='accelerator'), or both",
    )
    parser.add_argument("--routes", default="in_memory,per_batch,per_image",
                        help="with --in-memory: the routes timed, comma-separated")
    args = parser.parse_args()
    if args.in_memory:
        args.batch_size = args.batch_size or 256
        main_in_memory(args)
        return
    if not os.path.exists(RELEASED_PYTHON):
        sys.exit(
            f"{RELEASED_PYTHON} is missing: run `bash benchmarks/released_pipeline_setup.sh` "
            "first (it installs torch and torchvision there, apart from the package's .venv)."
        )
    args.batch_size = args.batch_size or 32
    with tempfile.TemporaryDirectory() as folder:
        paths = make_photo_folder(folder, args.photos)
        sizes = sorted({Image.open(p).size for p in paths}, key=lambda size: size[0] * size[1])
        print(
            f"{len(paths)} JPEGs from {sizes[0]} to {sizes[-1]} pixels; batch {args.batch_size}; "
            f"{args.workers} workers on {os.cpu_count()} cores; load average "
            f"{os.getloadavg()[0]:.1f} before the runs"
        )
        names = [f"released: torchvision + DataLoader({args.workers} workers)"]
        names.append("keras_vicreg tf.data (default, resize not antialiased)")
        if args.antialias:
            names.append("keras_vicreg tf.data, antialias=True")
        rows, versions = [], ""
        for round_ in range(args.rounds):
            for name in names:
                if name.startswith("released"):
                    out = run_released(folder, args.images, args.batch_size, args.workers)
                    figures = out["images_per_s"], out["cpu_ms_per_image"]
                    versions = f"torch {out['torch']}, torchvision {out['torchvision']}"
                else:
                    antialias = "antialias=True" in name
                    figures = bench_tf(
                        folder, args.images, args.batch_size, args.workers, antialias
                    )
                rows.append((name, round_ + 1, *figures))
        stages = {names[0]: run_released(folder, 0, args.batch_size, args.workers,
                                         args.stage_sample)["stages"]}
        stages[names[1]] = tf_stage_times(paths, args.stage_sample, args.batch_size, args.workers)
    print(f"released pipeline on {versions}; load average {os.getloadavg()[0]:.1f} after")
    print(
        "\n| pipeline | round | two-view images/s | CPU ms per image | read+decode | "
        "crop+resize | photometric | batching |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, round_, rate, cpu in rows:
        print(f"| {name} | {round_} | {rate:.0f} | {cpu:.1f} | | | | |")
    for name, figures in stages.items():
        print(f"| {name} | stages, CPU ms per image ({figures['sample']} images) | | | "
              f"{_stage_cells(figures)} |")
    best = {name: max(r for n, _, r, _ in rows if n == name) for name in names}
    cpu = {name: min(c for n, _, _, c in rows if n == name) for name in names}
    print(
        f"\nbest rounds, keras_vicreg / released: {best[names[1]] / best[names[0]]:.2f}x the "
        f"images per second, {cpu[names[0]] / cpu[names[1]]:.2f}x fewer CPU ms per image"
    )


if __name__ == "__main__":
    main()
