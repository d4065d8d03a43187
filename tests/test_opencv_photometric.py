"""OpenCV's photometric half (`transforms.opencv_photometric`) against TensorFlow's.

The pipeline's large views take flip, jitter, grayscale, blur, solarization and normalisation from
OpenCV's kernels; the reference is `transforms.apply_view_params_batch` (TensorFlow), which the view
statistics tests tie to the image-by-image views. Given the same draws, the two must give the same
pixels to float rounding: the choices bit for bit, the views to 1e-4 after normalisation (a few
float32 steps of the [0, 1] values, divided by the std of about 0.22).
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage import data as skimage_data

from keras_vicreg import data
from keras_vicreg.data import transforms
from keras_vicreg.data.transforms import draws
from keras_vicreg.data.transforms import opencv_photometric

pytestmark = pytest.mark.skipif(
    not opencv_photometric.available(), reason="opencv-python-headless is not installed"
)

IMAGENET = transforms.get_augmentation("imagenet")
# A one-channel view, with everything a one-channel view can draw.
GRAY_VIEW = transforms.ViewAugmentation(image_size=48, mean=(0.5,), std=(0.25,), hue=0.0,
                                        saturation=0.0, grayscale_prob=0.0, solarize_prob=0.3,
                                        blur_prob=0.5)
VIEWS = {
    "imagenet_a": IMAGENET.view_a,
    "imagenet_b": IMAGENET.view_b,
    "small_a": transforms.get_augmentation("small").view_a,
    "one_channel": GRAY_VIEW,
}
ATOL = 1e-4


def _smooth_images(count, size, channels, seed=0):
    """Photo-like float32 images in [0, 1]: blocks of colour, smoothed, and noise."""
    rng = np.random.default_rng(seed)
    coarse = tf.constant(rng.random((count, 6, 6, channels), dtype=np.float32))
    images = tf.image.resize(coarse, [size, size], "bicubic").numpy()
    images += rng.normal(0, 0.03, images.shape).astype(np.float32)
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _opencv_views(images, uniforms, view, input_scale=1.0):
    return np.stack([
        opencv_photometric.apply_view(image, opencv_photometric.view_params(row, view), view,
                                      input_scale=input_scale)
        for image, row in zip(images, uniforms)
    ])


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_choices_equal_tensorflow_draws_bit_for_bit(name):
    view = VIEWS[name]
    uniforms = np.random.default_rng(1).random((2000, draws.VIEW_UNIFORMS), dtype=np.float32)
    want = draws._view_params(tf.constant(uniforms), view)
    for row, uniform in zip(range(len(uniforms)), uniforms):
        got = opencv_photometric.view_params(uniform, view)
        for field, value in got._asdict().items():
            np.testing.assert_array_equal(value, getattr(want, field)[row].numpy(), err_msg=field)


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views_equal_tensorflow_kernels_to_float_rounding(name):
    view = VIEWS[name]
    count = 96
    images = _smooth_images(count, view.image_size, view.channels)
    uniforms = np.random.default_rng(2).random((count, draws.VIEW_UNIFORMS), dtype=np.float32)
    params = draws._view_params(tf.constant(uniforms), view)
    want = transforms.apply_view_params_batch(tf.constant(images), params, view).numpy()
    got = _opencv_views(images, uniforms, view)
    error = np.abs(got - want)
    assert error.max() < ATOL and error.mean() < 1e-5, (error.max(), error.mean())
    # Every step was taken by some image, and left out by another where it can be.
    for field in ("flip", "jitter", "grayscale", "blur", "solarize"):
        taken = getattr(params, field).numpy()
        probability = getattr(view, f"{field}_prob")
        assert taken.any() == (probability > 0), field
        assert (not taken.all()) == (probability < 1), field
    # The images differ from what they were: the steps did something.
    unchanged = np.full_like(uniforms, 0.999)
    assert np.abs(got - _opencv_views(images, unchanged, view)).mean() > 0.05


def test_each_jitter_step_alone_and_negative_hue_shifts():
    view = IMAGENET.view_a
    images = _smooth_images(16, 224, 3, seed=3)
    # Nothing drawn (uniforms lie in [0, 1): 0.999 is above every probability but 1, the blur's)...
    uniforms = np.full((16, draws.VIEW_UNIFORMS), 0.999, np.float32)
    uniforms[:, 6:10] = [0.1, 0.2, 0.3, 0.4]  # the jitter's order: no ties
    uniforms[:, 1] = 0.0  # ...but the jitter, one step at a time: the others' factors are 1
    uniforms[:, 2:6] = 0.5  # factor 1, hue shift 0
    for index in range(16):
        step = index % 4
        uniforms[index, 2 + step] = (0.02, 0.98)[index // 4 % 2]  # extremes, negative hue too
    params = draws._view_params(tf.constant(uniforms), view)
    want = transforms.apply_view_params_batch(tf.constant(images), params, view).numpy()
    error = np.abs(_opencv_views(images, uniforms, view) - want)
    assert error.max() < ATOL, error.max(axis=(1, 2, 3))


def test_scaling_and_clipping_of_an_unscaled_resize():
    # The pipeline hands OpenCV `tf.image.resize` of uint8 crops, in 0..255 with the cubic filter's
    # overshoot: scaled by 1 / 255 and clipped there, as `geometry.resize` does in TensorFlow.
    view = IMAGENET.view_b
    crops = (np.random.default_rng(4).random((8, 90, 70, 3)) > 0.5).astype(np.uint8) * 255
    unscaled = np.stack([transforms.resize(tf.constant(c), 224, scaled=False) for c in crops])
    assert unscaled.min() < 0 and unscaled.max() > 255  # the cubic filter overshoots
    scaled = np.stack([transforms.resize(tf.constant(c), 224) for c in crops])
    uniforms = np.random.default_rng(5).random((8, draws.VIEW_UNIFORMS), dtype=np.float32)
    params = draws._view_params(tf.constant(uniforms), view)
    want = transforms.apply_view_params_batch(tf.constant(scaled), params, view).numpy()
    got = _opencv_views(unscaled, uniforms, view, input_scale=1.0 / 255.0)
    assert np.abs(got - want).max() < ATOL


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.0])
def test_blur_kernel_leaves_out_only_negligible_taps(sigma):
    full = transforms.gaussian_kernel(tf.constant(sigma), 23).numpy()
    short = opencv_photometric.gaussian_kernel(np.float32(sigma), 23)
    assert len(short) % 2 == 1 and len(short) <= 23
    outer = (23 - len(short)) // 2
    np.testing.assert_allclose(short, full[outer : 23 - outer], rtol=1e-6, atol=1e-12)
    dropped = np.concatenate([full[:outer], full[23 - outer :]]).astype(np.float64).sum()
    assert dropped < 2.3e-8
    assert (len(short) < 23) == (sigma < 1.5)


def _photo_folder(root, count=6):
    photos = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea()]
    for index in range(count):
        photo = photos[index % len(photos)][index * 7 :, index * 5 :]
        folder = root / f"class_{index % 2}"
        folder.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(photo).resize((320, 260)).save(buffer, "JPEG", quality=90)
        (folder / f"{index}.jpg").write_bytes(buffer.getvalue())
    return str(root)


def _views(folder):
    dataset = data.two_view_dataset(folder, 3, augmentation="imagenet", seed=7, shuffle_buffer=0)
    return [np.concatenate([view.numpy() for view in pair]) for pair in dataset]


def test_pipeline_takes_opencv_and_gives_tensorflows_views(tmp_path, monkeypatch):
    folder = _photo_folder(tmp_path)
    calls = []
    apply_two_views = opencv_photometric.apply_two_views

    def counted(*args, **kwargs):
        calls.append(1)
        return apply_two_views(*args, **kwargs)

    monkeypatch.setattr(opencv_photometric, "apply_two_views", counted)
    fast = _views(folder)
    assert calls, "the 224-pixel views did not take OpenCV's kernels"
    # Without OpenCV the same pipeline falls back to TensorFlow's ops, image by image.
    monkeypatch.setattr(opencv_photometric, "available", lambda: False)
    calls.clear()
    reference = _views(folder)
    assert not calls and len(fast) == len(reference) == 2
    for got, want in zip(fast, reference):
        assert got.shape == want.shape == (6, 224, 224, 3)
        assert np.abs(got - want).max() < ATOL


