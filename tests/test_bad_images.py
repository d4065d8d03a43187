"""Bad images in a pretraining source: undecodable files and forged sizes, skipped, listed, counted.

The faults are real files: truncated JPEGs, bytes that are no image, a PNG whose IHDR (with a valid
CRC) declares 24000 x 24000 pixels and a JPEG whose SOF declares as much. The references are the
decoded images themselves (a header's size against the decoded shape) and the files written.
"""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import keras

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vicreg.data import decode
from keras_vicreg.data import image_headers
from keras_vicreg.data import image_scan
from keras_vicreg.data import two_view_dataset
from keras_vicreg.training import bad_images
from keras_vicreg.training import exit_codes
from keras_vicreg.training import pretraining_data
from tests.test_pretrain_config import load_config

pytestmark = pytest.mark.backend_neutral

HUGE = 24_000  # 24000 x 24000 x 3 bytes: 1.7 GB decoded


def _encoded(fmt, height=20, width=12, seed=0, **options):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png():
    """A 70-byte PNG, valid up to its data, whose IHDR declares HUGE x HUGE RGB pixels."""
    header = struct.pack(">IIBBBBB", HUGE, HUGE, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def huge_jpeg():
    """A small real JPEG whose SOF0 segment is rewritten to declare HUGE x HUGE pixels."""
    data = bytearray(_encoded("JPEG"))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", HUGE, HUGE)
    return bytes(data)


def truncated_jpeg():
    data = _encoded("JPEG", 64, 64)
    return data[: len(data) * 2 // 3]  # the header and part of the scan: it does not decode


@pytest.mark.parametrize("fmt, options", [
    ("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": False}),
    ("WEBP", {"lossless": True}), ("WEBP", {"exif": b"Exif\0\0"}),  # VP8, VP8L, VP8X
])
def test_the_header_declares_the_size_of_the_decoded_image(fmt, options):
    data = _encoded(fmt, 21, 13, **options)
    height, width, known = image_headers.declared_size(tf.constant(data))
    decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
    assert bool(known) and [int(height), int(width)] == decoded.shape[:2].as_list()


def test_a_top_down_bmp_declares_its_height_negative_and_is_read_as_positive():
    data = bytearray(_encoded("BMP", 21, 13))
    data[22:26] = struct.pack("<i", -21)
    assert [int(v) for v in image_headers.declared_size(tf.constant(bytes(data)))[:2]] == [21, 13]


@pytest.mark.parametrize("forged", [huge_png, huge_jpeg], ids=["png", "jpeg"])
def test_a_forged_size_is_refused_from_the_header_before_the_decoder_runs(forged):
    data = tf.constant(forged())
    assert [int(v) for v in image_headers.declared_size(data)[:2]] == [HUGE, HUGE]
    reason = image_headers.over_budget_reason(data, image_headers.MAX_IMAGE_PIXELS)
    assert "declares 24000 x 24000 = 576000000 pixels, over max_image_pixels" in reason
    # The decoding functions fail on the budget's assertion, run before the decoder.
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares more pixels than"):
        decode.decode_and_crop(data, lambda shape: tf.constant([0, 0, 1, 1]), 3,
                               max_pixels=image_headers.MAX_IMAGE_PIXELS)


def test_the_pipeline_skips_images_over_the_budget_and_keeps_the_others():
    # 6 valid 20 x 12 images (240 pixels), 2 forged ones; batches of 2, remainder dropped.
    images = [_encoded(fmt, seed=i) for fmt in ("PNG", "JPEG") for i in range(3)]
    source = tf.data.Dataset.from_tensor_slices(images + [huge_png(), huge_jpeg()])

    def batches(max_pixels):
        return len(list(two_view_dataset(source, 2, augmentation="small", seed=0,
                                         max_image_pixels=max_pixels)))

    assert batches(image_headers.MAX_IMAGE_PIXELS) == 3  # the 6 valid ones
    assert batches(239) == 0  # valid images over a budget smaller than they are: all skipped
    assert batches(None) == 3  # no budget: the forged ones still fail (their data is missing)


def test_the_scan_names_each_skipped_image_and_why():
    images = [_encoded("PNG"), truncated_jpeg(), b"not an image", huge_png(), _encoded("JPEG")]
    source = tf.data.Dataset.from_tensor_slices(
        {"image": images, "image/filename": [f"{i}.img" for i in range(5)]}
    )
    scan = image_scan.scan_images(source, 5, max_pixels=image_headers.MAX_IMAGE_PIXELS)
    assert scan.count == 5 and [s["file"] for s in scan.skipped] == ["1.img", "2.img", "3.img"]
    reasons = [s["reason"] for s in scan.skipped]
    assert reasons[0].startswith("it does not decode")
    assert "not an image" in reasons[1] and "over max_image_pixels" in reasons[2]


def _folder(tmp_path, good, bad):
    """A folder of one class: `good` valid JPEGs and PNGs, and the `bad` files (name: bytes)."""
    folder = tmp_path / "images" / "class_a"
    folder.mkdir(parents=True)
    for i in range(good):
        fmt = "JPEG" if i % 2 else "PNG"
        (folder / f"good_{i}.{fmt.lower()}").write_bytes(_encoded(fmt, seed=i))
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return str(folder.parent)


BAD = {
    "truncated.jpg": truncated_jpeg(), "garbage.png": b"\x89PNG not really",
    "huge.png": huge_png(), "huge.jpg": huge_jpeg(),
}


def _config(folder, count, batch_size=4, fraction=0.01):
    config = load_config("tiny")
    config.dataset, config.num_examples, config.batch_size = folder, count, batch_size
    config.shuffle_buffer, config.summary_examples = 8, 4
    config.max_undecodable_fraction = fraction
    return config


def _report(workdir):
    return json.loads((workdir / bad_images.REPORT_FILE).read_text())


def test_skipped_images_are_listed_in_the_workdir_and_training_reads_full_epochs(tmp_path):
    folder, workdir = _folder(tmp_path, 16, BAD), tmp_path / "work"
    config = _config(folder, 20, fraction=0.2)  # 4 of 20 bad, 16 left for the epoch's 4 batches
    config.steps_per_epoch = 4
    data = pretraining_data.Data(config, strategy=None, workdir=str(workdir))
    report = _report(workdir)
    assert report["passed"] and report["scanned"] == 20 and report["skipped_count"] == 4
    assert sorted(s["file"] for s in report["skipped"]) == sorted(
        str(pathlib.Path(folder).resolve() / "class_a" / name) for name in BAD
    )
    assert all(s["reason"] for s in report["skipped"])
    assert len(list(data.epoch(0))) == 4
    # A resumed run reuses the passed scan.
    again = pretraining_data.Data(config, strategy=None, workdir=str(workdir))
    assert again.image_scan == report


def test_more_bad_images_than_the_limit_stop_the_run_before_training(tmp_path):
    folder, workdir = _folder(tmp_path, 16, BAD), tmp_path / "work"
    config = _config(folder, 20, fraction=0.1)
    config.steps_per_epoch = 4
    with pytest.raises(bad_images.UndecodableImagesError) as error:
        pretraining_data.Data(config, strategy=None, workdir=str(workdir))
    message = str(error.value)
    assert "4 of the 20 images" in message and "max_undecodable_fraction=0.1" in message
    assert all(name in message for name in BAD) and str(workdir) in message
    assert exit_codes.status_of(error.value) == exit_codes.INVALID_CONFIG
    assert not _report(workdir)["passed"]


def test_skips_that_would_shorten_every_epoch_stop_the_run_before_training(tmp_path):
    folder = _folder(tmp_path, 16, BAD)
    config = _config(folder, 20, fraction=0.5)  # 16 decode: 4 batches of 4, not 20 // 4 = 5
    with pytest.raises(bad_images.UndecodableImagesError, match="steps_per_epoch=4"):
        pretraining_data.Data(config, strategy=None, workdir=str(tmp_path / "work"))


def test_a_source_where_nothing_decodes_is_an_invalid_config(tmp_path):
    folder = _folder(tmp_path, 0, BAD)
    config = _config(folder, 4, batch_size=2, fraction=1.0)
    config.summary_examples = 2
    with pytest.raises(bad_images.UndecodableImagesError, match="None of the 4 images") as error:
        pretraining_data.Data(config, strategy=None)
    assert exit_codes.status_of(error.value) == exit_codes.INVALID_CONFIG


@pytest.mark.slow
def test_the_trainer_exits_invalid_config_naming_the_images_and_writes_the_list(tmp_path):
    folder, workdir = _folder(tmp_path, 16, BAD), tmp_path / "work"
    command = [sys.executable, "-m", "trainers.pretrain", "--config=configs/tiny.py",
               f"--workdir={workdir}", f"--config.dataset={folder}", "--config.num_examples=20",
               "--config.batch_size=4", "--config.summary_examples=4"]
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, cwd=pathlib.Path(__file__).resolve().parents[1], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == exit_codes.INVALID_CONFIG, result.stderr[-2000:]
    assert "4 of the 20 images" in result.stderr and "huge.png" in result.stderr
    assert _report(workdir)["skipped_count"] == 4
    assert not (workdir / "checkpoints").exists()  # stopped before training
