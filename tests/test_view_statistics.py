"""The fast paths make the views of the image-by-image reference: equal where they compute the same,
the same in distribution where they draw otherwise.

The reference is `transforms.two_views`, one image and one seed at a time. Per preset (imagenet at
64 pixels to keep the reference cheap, small at 32, grayscale at 28):

- The per-batch host path (`two_view_dataset` of images it decodes: crop and resize per image, the
  rest per batch) draws from the same per-image seeds: its views equal the reference's, pixel for
  pixel to float rounding. At 224 pixels that half runs with OpenCV's kernels, held to
  TensorFlow's to float rounding for the same draws, the whole pipeline too, in
  tests/test_opencv_photometric.py.
- The in-memory path (`batch_two_views`) draws each batch's choices from the batch's seed, and the
  accelerator path (`PhotometricAugmentation`, in the train step) from `keras.random`: their views
  must match the reference's in distribution. Compared over N views: per-channel means and spreads
  of the views (two-sample, 4 standard errors), the rates of flip, jitter, grayscale, blur and
  solarization against the preset (binomial, 4 standard deviations; exact at probabilities 0 and
  1), read from the draws each path reports; the grayscale rate also from the pixels (a colour
  image whose channels come out equal); and the crops' scales and log aspect ratios (4 standard
  errors). At 4 sigma a correct path fails one comparison in about 16,000.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_vicreg.data import pretraining as pretraining_data
from keras_vicreg.data import transforms
from keras_vicreg.data.transforms import draws
from keras_vicreg.models import PhotometricAugmentation

N = 768  # views per path and preset
SIGMAS = 4.0
PRESETS = {"imagenet": 64, "small": 32, "grayscale": 28}
HEIGHT, WIDTH = 48, 40  # the source images: not square, so that crops meet both bounds


def _images(channels, count=N, seed=0):
    """Colourful uint8 images: random 8 x 8 blocks plus noise, every channel its own."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (count, HEIGHT // 8, WIDTH // 8, channels))
    images = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2) + rng.normal(0, 12, (count, HEIGHT,
                                                                              WIDTH, channels))
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _seeds(count, offset):
    return tf.stack([tf.range(offset, offset + count, dtype=tf.int64),
                     tf.fill([count], tf.constant(5, tf.int64))], axis=1)


def _per_view_seeds(seed):
    """(crop seed, params seed) of view a and of view b, as `two_views` splits an image's seed."""
    halves = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return [draws.split_view_seed(half) for half in halves]


def _reference(images, augmentation, offset=0):
    """The reference's views, windows and draws, one image and seed at a time (a tf.data map)."""

    def one(image, seed):
        pair = transforms.two_views(image, seed, augmentation)
        reported = []
        for (crop_seed, params_seed), view in zip(_per_view_seeds(seed),
                                                  (augmentation.view_a, augmentation.view_b)):
            window = transforms.sample_crop_window(tf.shape(image), crop_seed, view.crop_scale,
                                                   view.crop_ratio)
            reported.append((window, transforms.sample_view_params(params_seed, view)))
        return pair, tuple(reported)

    dataset = tf.data.Dataset.from_tensor_slices((images, _seeds(len(images), offset)))
    return next(iter(dataset.map(one).batch(len(images))))


def _denormalised(views, view):
    return np.asarray(views, np.float64) * np.array(view.std) + np.array(view.mean)


def _assert_same_mean(sample, reference, what):
    sample, reference = np.asarray(sample, np.float64), np.asarray(reference, np.float64)
    difference = sample.mean(0) - reference.mean(0)
    error = np.sqrt(sample.var(0, ddof=1) / len(sample) + reference.var(0, ddof=1) / len(reference))
    assert np.all(np.abs(difference) <= SIGMAS * error + 1e-9), (what, difference, error)


def _assert_pixels_match(views, reference_views, view, what):
    for name, reduce in (("mean", np.mean), ("spread", np.std)):
        _assert_same_mean(reduce(_denormalised(views, view), axis=(1, 2)),
                          reduce(_denormalised(reference_views, view), axis=(1, 2)),
                          f"{what}: per-channel {name}")


RATES = ("flip", "jitter", "grayscale", "blur", "solarize")


def _assert_rates(params, view, what):
    for name in RATES:
        taken = np.asarray(ops.convert_to_numpy(getattr(params, name)), bool)
        p = getattr(view, f"{name}_prob")
        if p in (0.0, 1.0):
            assert np.all(taken == bool(p)), (what, name)
        else:
            bound = SIGMAS * np.sqrt(p * (1 - p) / taken.size)
            assert abs(taken.mean() - p) <= bound, (what, name, taken.mean(), p)


def _gray_share(views, view):
    """The share of views whose channels are equal: converted to grayscale (colour inputs)."""
    pixels = _denormalised(views, view)
    return np.mean(np.all(np.abs(pixels - pixels[..., :1]) < 1e-4, axis=(1, 2, 3)))


def _crop_statistics(windows):
    windows = np.asarray(windows, np.float64)
    return np.stack([windows[:, 2] * windows[:, 3] / (HEIGHT * WIDTH),
                     np.log(windows[:, 3] / windows[:, 2])], axis=1)


@pytest.fixture(scope="module", params=sorted(PRESETS))
def preset(request):
    """(augmentation, images, the reference's (views, reported draws))."""
    augmentation = transforms.get_augmentation(request.param, PRESETS[request.param])
    images = _images(augmentation.view_a.channels)
    return augmentation, images, _reference(images, augmentation)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="host paths: TensorFlow")
def test_the_per_batch_host_path_equals_the_reference_view_for_view(preset):
    augmentation, images, (reference, _) = preset
    count = 128
    dataset = tf.data.Dataset.from_tensor_slices((images[:count], _seeds(count, 0)))
    dataset = dataset.map(lambda image, seed: pretraining_data._resized_two_views(
        image, seed, augmentation))
    parts = next(iter(dataset.batch(count)))
    views = pretraining_data._augment_two_views(*parts, augmentation)
    for got, expected in zip(views, reference):
        close = np.abs(got.numpy() - expected.numpy()[:count]) <= 1e-5
        assert close.mean() >= 1 - 1e-4, f"{(~close).sum()} pixels differ"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="host paths: TensorFlow")
def test_the_in_memory_path_matches_the_reference_in_distribution(preset):
    augmentation, images, (reference, reported) = preset
    batch = 128
    views, windows, params = [[], []], [[], []], [[], []]
    for start in range(0, N, batch):
        seed = tf.constant([start, 9], tf.int64)
        chunk = tf.constant(images[start:start + batch])
        for index, got in enumerate(transforms.batch_two_views(chunk, seed, augmentation)):
            views[index].append(got.numpy())
        # The draws batch_two_views made: the same seeds, the same calls.
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        for index, view in enumerate((augmentation.view_a, augmentation.view_b)):
            crop_draws = draws.sample_batch_crop_draws(seeds[2 * index], len(chunk))
            windows[index].append(transforms.crop_windows(
                tf.shape(chunk)[1:], crop_draws, [view.crop_scale], [view.crop_ratio]).numpy())
            params[index].append(draws.sample_batch_view_params(seeds[2 * index + 1], view,
                                                                len(chunk)))
    for index, view in enumerate((augmentation.view_a, augmentation.view_b)):
        what = f"{augmentation.name} view {'ab'[index]}"
        _assert_pixels_match(np.concatenate(views[index]), reference[index], view, what)
        _assert_same_mean(_crop_statistics(np.concatenate(windows[index])),
                          _crop_statistics(reported[index][0]), f"{what}: crop scale, ratio")
        _assert_rates(tf.nest.map_structure(lambda *p: tf.concat(p, 0), *params[index]),
                      view, what)
        _assert_rates(reported[index][1], view, f"{what} (reference)")


def test_the_accelerator_path_matches_the_reference_in_distribution(preset):
    augmentation, images, (reference, reported) = preset
    # Other crops than the reference's (other seeds): independent samples. Cropped and resized
    # as the pipeline does, as uint8.
    def crop(image, seed):
        return pretraining_data._resized_two_views(image, seed, augmentation, photometric=False)

    dataset = tf.data.Dataset.from_tensor_slices((images, _seeds(N, N)))
    crops = next(iter(dataset.map(crop).batch(N)))
    layer = PhotometricAugmentation(augmentation, seed=11)
    params = layer.draw(N)  # what `call` does in training: draw, then apply
    views = layer.apply([ops.convert_to_tensor(part.numpy()) for part in crops], params)
    for index, view in enumerate((augmentation.view_a, augmentation.view_b)):
        what = f"{augmentation.name} view {'ab'[index]} on the accelerator"
        got = ops.convert_to_numpy(views[index])
        _assert_pixels_match(got, reference[index], view, what)
        _assert_rates(params[index], view, what)
        if view.channels == 3:  # the grayscale rate seen in the pixels, both paths
            gray = np.asarray(ops.convert_to_numpy(params[index].grayscale), bool)
            assert _gray_share(got, view) == gray.mean(), what
            reference_gray = reported[index][1].grayscale.numpy()
            assert _gray_share(reference[index], view) == reference_gray.mean(), what
