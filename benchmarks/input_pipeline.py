"""Two-view images per second: keras_vicreg's tf.data pipeline against a per-image PIL pipeline.

    python benchmarks/input_pipeline.py [--pairs 2000] [--batch-size 64] [--rounds 2]
    python benchmarks/input_pipeline.py --in-memory grayscale [--batch-size 256] [--batches 40]

Both pipelines make VICReg's two ImageNet views (the `imagenet` preset: random resized crop to 224,
bicubic, flip, colour jitter in random order, grayscale, blur, solarization, normalisation) from the
same folder of JPEG photographs at ImageNet sizes, written from scikit-image's sample photographs
(`skimage.data`) at several sizes and aspect ratios. The PIL pipeline is the straightforward one:
each image opened with PIL and decoded whole, both views made with PIL and numpy as torchvision's
transforms do, in a `multiprocessing.Pool` of `os.cpu_count()` worker processes, batches stacked in
the main process. The tf.data pipeline uses the same number of cores in one process.
Prints a markdown table; the rounds alternate between the pipelines and the best round counts. The
CPU time per pair (all threads, or all worker processes) is shown too: on a machine shared with
other work it is steadier than the rates.

`--in-memory PRESET` times `two_view_dataset` alone on uint8 images held in memory:
Fashion-MNIST's 60,000 training images for "grayscale" at 28 pixels (from tfds if prepared, else
random), random 32x32x3 images for "small", random 256x320x3 for "imagenet" at 224; shuffle buffer
60,000. It prints the CPU time (all threads) and wall time per batch of each route of
`keras_vicreg.data.batching.choose_route`: the array itself (the demo's route), and a
`tf.data.Dataset` of its images augmented per batch or wholly per image, in turn.
"""

import argparse
import dataclasses
import math
import multiprocessing
import os
import random
import tempfile
import time

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageFilter
from PIL import ImageOps

_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
)
_ASPECTS = (4 / 3, 3 / 4, 3 / 2, 1.0)
_LONG_SIDES = (500, 400, 333)


def make_photo_folder(root):
    """Writes the sample photographs as JPEGs (quality 90) in `root/<photo>/`; returns the paths."""
    from skimage import data

    paths = []
    for name in _PHOTOS:
        photo = getattr(data, name)()
        os.makedirs(os.path.join(root, name), exist_ok=True)
        height, width = photo.shape[:2]
        for aspect in _ASPECTS:
            crop_w = min(width, round(height * aspect))
            crop_h = min(height, round(crop_w / aspect))
            image = Image.fromarray(photo[:crop_h, :crop_w])
            for long_side in _LONG_SIDES:
                scale = long_side / max(crop_w, crop_h)
                size = (round(crop_w * scale), round(crop_h * scale))
                path = os.path.join(root, name, f"{aspect:.2f}_{long_side}.jpg")
                image.resize(size, Image.LANCZOS).save(path, quality=90)
                paths.append(path)
    return paths


def _crop_params(rng, height, width, scale, ratio):
    """torchvision's RandomResizedCrop.get_params."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    w, h = width, height
    if in_ratio < ratio[0]:
        h = round(w / ratio[0])
    elif in_ratio > ratio[1]:
        w = round(h * ratio[1])
    return (height - h) // 2, (width - w) // 2, h, w


def _adjust_hue(image, delta):
    """torchvision's adjust_hue for PIL images: shift the H channel of HSV."""
    hue, saturation, value = image.convert("HSV").split()
    shifted = (np.asarray(hue, np.uint8) + np.uint8(round(delta * 255) % 256)).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(shifted, "L"), saturation, value)).convert("RGB")


def pil_view(image, rng, view):
    """One view with PIL and numpy, as torchvision's transforms on a PIL image."""
    top, left, h, w = _crop_params(rng, image.height, image.width, view.crop_scale, view.crop_ratio)
    size = (view.image_size, view.image_size)
    image = image.resize(size, Image.BICUBIC, box=(left, top, left + w, top + h))
    if rng.random() < view.flip_prob:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < view.jitter_prob:
        strengths = (view.brightness, view.contrast, view.saturation)
        factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in strengths]
        factors.append(rng.uniform(-view.hue, view.hue))
        enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
        for index in rng.sample(range(4), 4):
            if index < 3:
                image = enhancers[index](image).enhance(factors[index])
            else:
                image = _adjust_hue(image, factors[3])
    if rng.random() < view.grayscale_prob:
        image = image.convert("L").convert("RGB")
    if rng.random() < view.blur_prob:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*view.blur_sigma)))
    if rng.random() < view.solarize_prob:
        image = ImageOps.solarize(image, 128)
    array = np.asarray(image, np.float32) / 255.0
    return (array - np.float32(view.mean)) / np.float32(view.std)


def _pil_pair(task):
    path, seed = task
    from keras_vicreg.data import transforms

    preset = transforms.get_augmentation("imagenet")
    rng = random.Random(seed)
    with Image.open(path) as image:
        image = image.convert("RGB")
    return pil_view(image, rng, preset.view_a), pil_view(image, rng, preset.view_b)


def bench_pil(paths, pairs, batch_size, workers):
    """(pairs per second, CPU ms per pair) of the PIL pipeline, batches stacked in this process.

    The CPU time counts the workers' (reaped at the end) and this process's over every pair made,
    the warm-up batch included.
    """
    tasks = [(paths[i % len(paths)], i) for i in range(pairs + batch_size)]
    cpu_start = os.times()
    pool = multiprocessing.Pool(workers)
    results = pool.imap(_pil_pair, tasks, chunksize=4)
    done, start = 0, None
    while done < pairs:
        batch = [next(results) for _ in range(batch_size)]
        np.stack([a for a, _ in batch]), np.stack([b for _, b in batch])
        done += batch_size
        if start is None:  # the first batch is warm-up
            start, done = time.perf_counter(), 0
    rate = done / (time.perf_counter() - start)
    pool.close()
    pool.join()
    cpu = sum(os.times()[:4]) - sum(cpu_start[:4])
    return rate, 1000 * cpu / len(tasks)


def bench_tf(folder, pairs, batch_size, antialias):
    """(pairs per second, CPU ms per pair) of keras_vicreg.data.two_view_dataset on the folder."""
    from keras_vicreg.data import transforms
    from keras_vicreg import data

    preset = transforms.get_augmentation("imagenet")
    views = [dataclasses.replace(v, antialias=antialias) for v in (preset.view_a, preset.view_b)]
    augmentation = dataclasses.replace(preset, view_a=views[0], view_b=views[1])
    dataset = data.two_view_dataset(folder, batch_size, augmentation=augmentation, seed=0)
    iterator = iter(dataset.repeat())
    next(iterator)  # warm-up: tracing, thread pools, autotuning
    start, cpu_start, done = time.perf_counter(), time.process_time(), 0
    while done < pairs:
        view_a, _ = next(iterator)
        done += int(view_a.shape[0])
    rate = done / (time.perf_counter() - start)
    return rate, 1000 * (time.process_time() - cpu_start) / done


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


def bench_in_memory(images, preset, batch_size, batches, route):
    """(CPU ms, wall ms) per batch of `two_view_dataset` on in-memory images, after 5 warm-up.

    `route` is one of `keras_vicreg.data.batching.ROUTES`: "in_memory" passes the array itself (the
    demo's route), "per_batch" and "per_image" a `tf.data.Dataset` of its images, augmented per
    batch or wholly per image.
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
    print("\n| round | route | CPU ms per batch | wall ms per batch | CPU ms per pair |")
    print("|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for route in ("in_memory", "per_batch", "per_image"):
            cpu, wall = bench_in_memory(
                images, args.in_memory, args.batch_size, args.batches, route
            )
            print(
                f"| {round_ + 1} | {route} | {cpu:.1f} | {wall:.1f} | "
                f"{cpu / args.batch_size:.3f} |"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000, help="pairs timed per round")
    parser.add_argument("--batch-size", type=int, default=None, help="64; 256 with --in-memory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument(
        "--in-memory",
        choices=("grayscale", "small", "imagenet"),
        help="time two_view_dataset alone on in-memory images with this preset",
    )
    parser.add_argument("--batches", type=int, default=40, help="batches timed per round")
    args = parser.parse_args()
    if args.in_memory:
        args.batch_size = args.batch_size or 256
        main_in_memory(args)
        return
    args.batch_size = args.batch_size or 64
    with tempfile.TemporaryDirectory() as folder:
        paths = make_photo_folder(folder)
        sizes = sorted({Image.open(p).size for p in paths})
        print(
            f"{len(paths)} JPEGs from {sizes[0]} to {sizes[-1]} pixels; {args.workers} cores; "
            f"load average {os.getloadavg()[0]:.1f} before the runs"
        )
        rows = {
            "keras_vicreg tf.data (default, resize not antialiased)": [],
            "keras_vicreg tf.data, antialias=True (PIL's resize)": [],
            f"PIL + numpy, multiprocessing.Pool({args.workers})": [],
        }
        names = list(rows)
        for _ in range(args.rounds):
            rows[names[0]].append(bench_tf(folder, args.pairs, args.batch_size, False))
            rows[names[1]].append(bench_tf(folder, args.pairs, args.batch_size, True))
            rows[names[2]].append(bench_pil(paths, args.pairs, args.batch_size, args.workers))
    pil = max(rate for rate, _ in rows[names[2]])
    print("\n| pipeline | pairs/s | views/s | vs PIL | CPU ms per pair | every round (pairs/s) |")
    print("|---|---|---|---|---|---|")
    for name, values in rows.items():
        best, cpu = max(values)
        rounds = ", ".join(f"{rate:.0f}" for rate, _ in values)
        print(
            f"| {name} | {best:.0f} | {2 * best:.0f} | {best / pil:.2f}x | {cpu:.1f} | {rounds} |"
        )


if __name__ == "__main__":
    main()
