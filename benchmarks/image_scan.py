"""What the bad-image checks cost: the scan before training against an epoch, and the header check.

    python benchmarks/image_scan.py                          # 300 JPEGs of 400 x 350, views of 224
    python benchmarks/image_scan.py --images 2000 --height 32 --width 32 --format PNG \
        --augmentation small --image_size 32                 # CIFAR-like PNGs

Writes a folder of synthetic photos (smooth gradients with noise, so that they compress like
photos), then prints, each the best of --repeats:

- scan: `image_scan.scan_images` over the folder (every image decoded whole, once, in parallel),
  what `training.bad_images.check_source` adds before training;
- epoch: one epoch of `two_view_dataset` over the same folder (augmentation, no training), with the
  pixel budget checked from each header (the default) and without it (`max_image_pixels=None`):
  the difference is what the header check costs each epoch.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_vicreg.data import image_folder, image_headers, image_scan  # noqa: E402
from keras_vicreg.data import transforms, two_view_dataset  # noqa: E402


def _write_folder(root, count, height, width, fmt):
    rng = np.random.default_rng(0)
    folder = os.path.join(root, "class_a")
    os.makedirs(folder)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    for i in range(count):
        base = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), x * y], -1) * 100 + 128
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        encode = tf.io.encode_jpeg if fmt == "JPEG" else tf.io.encode_png
        tf.io.write_file(os.path.join(folder, f"{i}.{fmt.lower()}"), encode(pixels))


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--height", type=int, default=350)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--format", choices=("JPEG", "PNG"), default="JPEG")
    parser.add_argument("--augmentation", default="imagenet")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        _write_folder(root, args.images, args.height, args.width, args.format)
        builder = image_folder(root)

        def scan():
            dataset = builder.as_dataset(split="train", decoders={"image": _skip()})
            found = image_scan.scan_images(dataset, args.images,
                                           max_pixels=image_headers.MAX_IMAGE_PIXELS)
            assert not found.skipped

        augmentation = transforms.get_augmentation(args.augmentation, args.image_size)

        def epoch(max_pixels):
            dataset = two_view_dataset(root, args.batch_size, augmentation=augmentation, seed=0,
                                       max_image_pixels=max_pixels)
            for _ in dataset:
                pass

        scan_s = _best(scan, args.repeats)
        checked = _best(lambda: epoch(image_headers.MAX_IMAGE_PIXELS), args.repeats)
        unchecked = _best(lambda: epoch(None), args.repeats)
    print(f"{args.images} {args.format} images of {args.height} x {args.width}, "
          f"{os.cpu_count()} CPUs")
    print(f"scan (decode every image once): {scan_s:.2f} s ({args.images / scan_s:.0f} images/s)")
    print(f"epoch with the header check:    {checked:.2f} s")
    print(f"epoch without it:               {unchecked:.2f} s")
    print(f"scan / epoch: {scan_s / checked:.2f}; header check per epoch: "
          f"{(checked - unchecked) / unchecked:+.1%}")


def _skip():
    import tensorflow_datasets as tfds

    return tfds.decode.SkipDecoding()


if __name__ == "__main__":
    main()
