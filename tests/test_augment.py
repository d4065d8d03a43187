"""Tests of keras_vicreg.data.transforms: the presets against VICReg's table, each operation against an
independent reference, the batched views against one image at a time, and the rates of the random
choices over many seeds (eagerly and in tf.data).
"""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from keras_vicreg.data import transforms

IMAGENET = transforms.get_augmentation("imagenet")


def _planes(shape=(3, 4, 24, 20), seed=0):
    """Random planes (channels, batch, height, width) in [0, 1)."""
    return tf.random.stateless_uniform(shape, [seed, 0])


def _seeds(count, offset=0):
    return tf.stack([tf.range(offset, offset + count), tf.fill([count], 7)], axis=1)


def test_imagenet_preset_matches_the_reference_table():
    for view in (IMAGENET.view_a, IMAGENET.view_b):
        assert view.image_size == 224
        assert view.crop_scale == (0.08, 1.0)
        assert view.crop_ratio == pytest.approx((3 / 4, 4 / 3))
        assert view.interpolation == "bicubic"
        assert view.flip_prob == 0.5
        assert (view.brightness, view.contrast, view.saturation, view.hue) == (0.4, 0.4, 0.2, 0.1)
        assert view.jitter_prob == 0.8
        assert view.grayscale_prob == 0.2
        assert view.blur_sigma == (0.1, 2.0)
        assert view.blur_kernel_size == 23  # about 10% of 224, odd
        assert view.mean == (0.485, 0.456, 0.406)
        assert view.std == (0.229, 0.224, 0.225)
    assert (IMAGENET.view_a.blur_prob, IMAGENET.view_b.blur_prob) == (1.0, 0.1)
    assert (IMAGENET.view_a.solarize_prob, IMAGENET.view_b.solarize_prob) == (0.0, 0.2)


def test_small_and_grayscale_presets_are_symmetric_small_scale_settings():
    small = transforms.get_augmentation("small")
    assert small.view_a == small.view_b
    assert small.view_a.image_size == 32
    assert small.view_a.crop_scale == (0.2, 1.0)
    assert small.view_a.blur_prob == 0.0
    assert small.view_a.solarize_prob == 0.1
    gray = transforms.get_augmentation("grayscale")
    assert gray.view_a == gray.view_b
    assert gray.view_a.channels == 1
    assert (gray.view_a.saturation, gray.view_a.hue, gray.view_a.grayscale_prob) == (0, 0, 0)


def test_with_image_size_scales_the_blur_kernel():
    assert transforms.get_augmentation("imagenet", image_size=96).view_a.blur_kernel_size == 9
    assert IMAGENET.with_image_size(32).view_b.blur_kernel_size == 3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"crop_scale": (0.5, 0.1)}, "crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"hue": 0.7}, "hue"),
        ({"interpolation": "lanczos9"}, "interpolation"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2)}, "mean"),
        ({"mean": (0.5,), "std": (0.2,)}, "saturation"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_invalid_views_raise_value_errors(kwargs, name):
    with pytest.raises(ValueError, match=f"Received: {name}="):
        transforms.ViewAugmentation(**kwargs)


def test_unknown_preset_and_mismatched_views_raise():
    with pytest.raises(ValueError, match="Received: augmentation='cifar'"):
        transforms.get_augmentation("cifar")
    with pytest.raises(ValueError, match="Received: view_a="):
        transforms.TwoViewAugmentation("x", IMAGENET.view_a, transforms.ViewAugmentation(image_size=96))


def _torchvision_crop_params(rng, height, width, scale, ratio):
    """An independent numpy transcription of torchvision's RandomResizedCrop.get_params."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    in_ratio = width / height
    w, h = width, height
    if in_ratio < ratio[0]:
        h = int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        w = int(round(h * ratio[1]))
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("height, width", [(100, 100), (60, 150)])
def test_crop_area_and_ratio_distributions_match_torchvision(height, width):
    count = 3000
    windows = tf.data.Dataset.from_tensor_slices(_seeds(count)).map(
        lambda seed: transforms.sample_crop_window([height, width, 3], seed)
    )
    windows = np.stack(list(windows.as_numpy_iterator()))
    y, x, h, w = windows.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
    rng = np.random.default_rng(0)
    reference = np.array(
        [
            _torchvision_crop_params(rng, height, width, (0.08, 1.0), (3 / 4, 4 / 3))
            for _ in range(count)
        ]
    )
    area = h * w / (height * width)
    reference_area = reference[:, 2] * reference[:, 3] / (height * width)
    assert area.min() >= 0.07 and area.max() <= 1.0
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(area, q) == pytest.approx(np.quantile(reference_area, q), abs=0.04)
    log_ratio = np.log(w / h)
    assert np.abs(log_ratio).max() <= math.log(4 / 3) + 0.05
    assert log_ratio.mean() == pytest.approx(
        np.log(reference[:, 3] / reference[:, 2]).mean(), abs=0.03
    )
    # Offsets are uniform over the free space: their mean is about half of it.
    assert np.mean(y / np.maximum(height - h, 1)) == pytest.approx(0.5, abs=0.05)


def test_crop_falls_back_to_a_central_crop_clamped_to_the_ratio():
    window = transforms.sample_crop_window([10, 1000, 3], [1, 2])
    np.testing.assert_array_equal(window, [0, (1000 - 13) // 2, 10, 13])


def test_crop_windows_of_several_views_are_each_view_s_window():
    scales, ratios = [(0.08, 1.0), (0.5, 0.9), (0.2, 1.0)], [(0.75, 4 / 3), (1.0, 2.0), (0.1, 0.2)]
    for index, shape in enumerate([(40, 60, 3), (300, 200, 3), (7, 5, 1), (10, 1000, 3)]):
        seeds = [tf.constant([index, view]) for view in range(3)]
        draws = transforms.sample_crop_draws(seeds)
        windows = transforms.crop_windows(shape, draws, scales, ratios)
        for seed, scale, ratio, window in zip(seeds, scales, ratios, windows):
            np.testing.assert_array_equal(
                window, transforms.sample_crop_window(shape, seed, scale, ratio)
            )


def _param_rates(view, seeds):
    params = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda seed: transforms.sample_view_params(seed, view)._asdict()
    )
    return {key: np.stack(values) for key, values in _stack_dicts(params).items()}


def _stack_dicts(dataset):
    columns = {}
    for element in dataset.as_numpy_iterator():
        for key, value in element.items():
            columns.setdefault(key, []).append(value)
    return columns


def test_random_choices_follow_the_table_inside_tf_data():
    count = 4000
    tolerance = 4 * math.sqrt(0.25 / count)  # four standard deviations at p = 0.5
    for view, blur, solarize in ((IMAGENET.view_a, 1.0, 0.0), (IMAGENET.view_b, 0.1, 0.2)):
        params = _param_rates(view, _seeds(count))
        assert params["flip"].mean() == pytest.approx(0.5, abs=tolerance)
        assert params["jitter"].mean() == pytest.approx(0.8, abs=tolerance)
        assert params["grayscale"].mean() == pytest.approx(0.2, abs=tolerance)
        assert params["blur"].mean() == pytest.approx(blur, abs=tolerance)
        assert params["solarize"].mean() == pytest.approx(solarize, abs=tolerance)
        factors = params["jitter_factors"]
        for column, (low, high) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
            assert factors[:, column].min() >= low and factors[:, column].max() <= high
            assert factors[:, column].mean() == pytest.approx((low + high) / 2, abs=0.02)
        sigma = params["blur_sigma"]
        assert sigma.min() >= 0.1 and sigma.max() <= 2.0
        assert sigma.mean() == pytest.approx(1.05, abs=0.03)
        order = params["jitter_order"]
        assert (np.sort(order, axis=1) == np.arange(4)).all()  # permutations
        for op in range(4):  # each operation comes at each step about a quarter of the time
            np.testing.assert_allclose((order == op).mean(axis=0), 0.25, atol=0.04)


def test_random_choices_are_the_same_eagerly_and_in_tf_data():
    seeds = _seeds(5, offset=100)
    in_dataset = _param_rates(IMAGENET.view_b, seeds)
    for row, seed in enumerate(seeds):
        eager = transforms.sample_view_params(seed, IMAGENET.view_b)
        for key, value in eager._asdict().items():
            np.testing.assert_array_equal(value.numpy(), in_dataset[key][row])


def test_adjust_hue_matches_tf_image_adjust_hue():
    image = tf.random.stateless_uniform([40, 30, 3], [3, 4])
    image = tf.concat([image[:20], tf.round(image[20:] * 4) / 4], 0)  # ties and grays
    deltas = [-0.5, -0.1, 0.0, 0.07, 0.5]
    planes = tf.repeat(tf.transpose(image, [2, 0, 1])[:, None], len(deltas), axis=1)
    got = tf.transpose(transforms.adjust_hue(planes, tf.constant(deltas)), [1, 2, 3, 0])
    for shifted, delta in zip(got, deltas):  # each image its own shift
        np.testing.assert_allclose(shifted, tf.image.adjust_hue(image, delta), atol=2e-6)


def test_adjust_color_follows_torchvision_definitions():
    planes = _planes((3, 5, 24, 20)).numpy()
    factors = np.float32([1.3, 0.7, 1.2, 0.6, 1.4])
    ops = [0, 1, 2, 3, 4]  # each image its own operation; 3 (hue) and 4 leave it unchanged
    got = transforms.adjust_color(planes, tf.constant(ops), factors).numpy()
    for image, (op, factor) in enumerate(zip(ops, factors)):
        rgb = planes[:, image]
        gray = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        want = [
            np.clip(factor * rgb, 0, 1),
            np.clip(factor * rgb + (1 - factor) * gray.mean(), 0, 1),
            np.clip(factor * rgb + (1 - factor) * gray, 0, 1),
            rgb,
            rgb,
        ][op]
        np.testing.assert_allclose(got[:, image], want, atol=1e-6)


def test_color_jitter_applies_each_image_s_operations_in_its_order():
    planes = _planes()
    factors = tf.constant([[1.3, 0.7, 1.2, 0.08], [0.8, 1.3, 0.9, -0.1]] * 2)
    orders = tf.constant([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [0, 1, 2, 3]])
    apply = tf.constant([True, True, True, False])

    def by_hand(image):
        result = planes[:, image : image + 1]
        for op in orders[image].numpy() if apply[image] else []:
            factor = factors[image : image + 1, op]
            if op == 3:
                result = transforms.adjust_hue(result, factor)
            else:
                result = transforms.adjust_color(result, tf.constant([op]), factor)
        return result[:, 0]

    got = transforms.color_jitter(planes, factors, orders, apply=apply)
    for image in range(4):
        np.testing.assert_allclose(got[:, image], by_hand(image), atol=1e-6)
        alone = transforms.color_jitter(  # a batch of one branches instead of selecting
            planes[:, image : image + 1], factors[image : image + 1], orders[image : image + 1],
            apply=apply[image : image + 1],
        )
        np.testing.assert_allclose(alone[:, 0], by_hand(image), atol=1e-6)
    reordered = transforms.color_jitter(planes, factors, tf.reverse(orders, [1]), apply=apply)
    assert np.abs(got[:, 0] - reordered[:, 0]).max() > 1e-3  # the order matters
    np.testing.assert_array_equal(got[:, 3], planes[:, 3])  # not applied


@pytest.mark.parametrize("height, width, kernel_size", [(30, 26, 7), (9, 9, 17)])
def test_gaussian_blur_matches_a_reflect_padded_convolution(height, width, kernel_size):
    planes = _planes((3, 3, height, width)).numpy()
    sigmas = np.float32([0.1, 0.9, 2.0])  # each image its own
    got = transforms.gaussian_blur(planes, sigmas, kernel_size).numpy()
    for image, sigma in enumerate(sigmas):
        kernel = transforms.gaussian_kernel(sigma, kernel_size).numpy()
        assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
        expected = ndimage.correlate1d(planes[:, image], kernel, axis=1, mode="mirror")
        expected = ndimage.correlate1d(expected, kernel, axis=2, mode="mirror")
        np.testing.assert_allclose(got[:, image], expected, atol=1e-6)


def test_solarize_inverts_the_values_at_or_above_128_of_255():
    values = tf.constant([[[0.0, 127 / 255, 128 / 255, 1.0]]])
    np.testing.assert_allclose(transforms.solarize(values), [[[0.0, 127 / 255, 127 / 255, 0.0]]])


def test_grayscale_gives_three_equal_channels_of_pil_luma():
    planes = _planes()
    gray = transforms.to_grayscale(planes)
    np.testing.assert_allclose(gray[0], gray[2])
    np.testing.assert_allclose(
        gray[1], 0.299 * planes[0] + 0.587 * planes[1] + 0.114 * planes[2], atol=1e-6
    )


def _every_option(view):
    """The view with every step on at a rate that leaves both outcomes frequent."""
    return dataclasses.replace(
        view, grayscale_prob=0.5, blur_prob=0.5, solarize_prob=0.5, blur_sigma=(0.5, 2.0)
    )


_VIEWS = {
    "imagenet_a": IMAGENET.view_a,  # blur always
    "imagenet_b": IMAGENET.view_b,  # blur 0.1, solarize 0.2
    "small": transforms.get_augmentation("small").view_a,
    "grayscale": transforms.get_augmentation("grayscale").view_a,
    "every_option": _every_option(IMAGENET.with_image_size(40).view_b),
    "every_option_gray": dataclasses.replace(
        transforms.get_augmentation("grayscale").view_a, blur_prob=0.5, solarize_prob=0.5
    ),
}


def _reference_view(image, params, view):
    """One resized image's view with Python branches, one step at a time: the reference of the
    batched code, which selects and gathers per image (the operations are tested above)."""
    planes = tf.transpose(image, [2, 0, 1])[:, None]  # a batch of one
    params = {key: value.numpy() for key, value in params._asdict().items()}
    if params["flip"]:
        planes = planes[..., ::-1]
    for op in params["jitter_order"] if params["jitter"] else []:
        factor = params["jitter_factors"][op : op + 1]
        if op < 3:
            planes = transforms.adjust_color(planes, tf.constant([op]), factor)
        elif view.hue > 0:
            planes = transforms.adjust_hue(planes, factor)
    if params["grayscale"]:
        planes = transforms.to_grayscale(planes)
    if params["blur"]:
        planes = transforms.gaussian_blur(planes, [params["blur_sigma"]], view.blur_kernel_size)
    planes = planes.numpy()[:, 0].transpose(1, 2, 0)
    if params["solarize"]:
        planes = np.where(planes >= 128 / 255, 1 - planes, planes)
    return (planes - np.float32(view.mean)) / np.float32(view.std)


@pytest.mark.parametrize("name", sorted(_VIEWS))
def test_batched_views_are_the_views_of_one_image_at_a_time(name):
    view = _VIEWS[name]
    count = 8 if view.image_size > 100 else 48
    images = tf.random.stateless_uniform((count,) + transforms.view_shape(view), [count, 1])
    params = [transforms.sample_view_params(seed, view) for seed in _seeds(count)]
    batch = transforms.stack_draws(params)
    got = transforms.apply_view_params_batch(images, batch, view).numpy()
    for index in range(count):
        want = _reference_view(images[index], params[index], view)
        np.testing.assert_allclose(got[index], want, atol=1e-5)
        one = tf.nest.map_structure(lambda value: value[index : index + 1], batch)  # branches
        alone = transforms.apply_view_params_batch(images[index : index + 1], one, view)
        np.testing.assert_allclose(alone[0], want, atol=1e-5)
    for key in ("flip", "jitter", "grayscale", "blur", "solarize"):
        prob = getattr(view, f"{key}_prob")
        if count * min(prob, 1 - prob) >= 3:  # both outcomes are expected, so tested
            assert 0 < getattr(batch, key).numpy().mean() < 1


def test_apply_view_params_batch_rejects_images_of_another_shape():
    params = transforms.fixed_view_params(IMAGENET.view_a, 2)
    with pytest.raises(ValueError, match=r"Received: images.shape=\(2, 32, 32, 3\)"):
        transforms.apply_view_params_batch(tf.zeros([2, 32, 32, 3]), params, IMAGENET.view_a)


def _checkerboard(size):
    board = (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)
    colours = np.array([0.9, 0.6, 0.7], np.float32)  # every value >= 128/255
    return (0.55 + 0.45 * board[..., None]) * colours / 0.9


def _isolated(view, **kwargs):
    """The view with whole-image crops and every step off except those in kwargs."""
    off = dict(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
    )
    return dataclasses.replace(view, **{**off, **kwargs})


def _views(image, view, count):
    dataset = tf.data.Dataset.from_tensor_slices(_seeds(count)).map(
        lambda seed: transforms.augment_view(image, seed, view), num_parallel_calls=2
    )
    mean, std = np.array(view.mean), np.array(view.std)
    return np.stack(list(dataset.as_numpy_iterator())) * std + mean  # back to [0, 1]


def test_whole_views_blur_solarize_grayscale_and_jitter_at_the_table_rates():
    count = 400
    tolerance = 4 * math.sqrt(0.25 / count)
    image = _checkerboard(32)
    small = IMAGENET.with_image_size(32)
    for view, rate in ((small.view_a, 1.0), (small.view_b, 0.1)):
        # sigma >= 1 so that every blur shows (at sigma 0.1 the taps beside the centre are 1e-22).
        blur = _isolated(view, blur_prob=view.blur_prob, blur_sigma=(1.0, 2.0))
        out = _views(image, blur, count)
        blurred = out.std(axis=(1, 2, 3)) < 0.9 * image.std()
        assert blurred.mean() == pytest.approx(rate, abs=tolerance)
        out = _views(image, _isolated(view, solarize_prob=view.solarize_prob), count)
        solarized = out.mean(axis=(1, 2, 3)) < 0.5  # every pixel was >= 128/255
        assert solarized.mean() == pytest.approx(view.solarize_prob, abs=tolerance)
    out = _views(image, _isolated(small.view_a, grayscale_prob=0.2), count)
    gray = np.abs(out[..., 0] - out[..., 1]).max(axis=(1, 2)) < 1e-5
    assert gray.mean() == pytest.approx(0.2, abs=tolerance)
    out = _views(image, _isolated(small.view_a, jitter_prob=0.8), count)
    jittered = np.abs(out - image).max(axis=(1, 2, 3)) > 1e-4
    assert jittered.mean() == pytest.approx(0.8, abs=tolerance)


@pytest.mark.parametrize("preset", ["imagenet", "small", "grayscale"])
@pytest.mark.parametrize(
    "shape, dtype", [((300, 500, 3), "uint8"), ((5, 7, 1), "uint8"), ((40, 30, 4), "float32")]
)
def test_views_of_any_image_have_the_preset_shape_and_range(preset, shape, dtype):
    augmentation = transforms.get_augmentation(preset)
    image = tf.random.stateless_uniform(shape, [1, 1])
    image = tf.cast(image * 255, tf.uint8) if dtype == "uint8" else image
    size, channels = augmentation.view_a.image_size, augmentation.view_a.channels
    for view, settings in zip(
        transforms.two_views(image, tf.constant([4, 2]), augmentation),
        (augmentation.view_a, augmentation.view_b),
    ):
        assert view.shape == (size, size, channels) and view.dtype == tf.float32
        low = (0 - np.array(settings.mean)) / np.array(settings.std)
        high = (1 - np.array(settings.mean)) / np.array(settings.std)
        assert (view.numpy() >= low - 1e-5).all() and (view.numpy() <= high + 1e-5).all()


def test_views_are_deterministic_given_a_seed_eagerly_and_in_tf_data():
    image = tf.cast(tf.random.stateless_uniform([60, 80, 3], [5, 5]) * 255, tf.uint8)
    small = transforms.get_augmentation("small")
    seeds = _seeds(4)
    mapped = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda seed: transforms.two_views(image, seed, small), num_parallel_calls=4
    )
    for seed, (view_a, view_b) in zip(seeds, mapped):
        eager_a, eager_b = transforms.two_views(image, seed, small)
        np.testing.assert_allclose(eager_a, view_a, atol=1e-5)
        np.testing.assert_allclose(eager_b, view_b, atol=1e-5)
    first, second = transforms.two_views(image, seeds[0], small)
    assert np.abs(first - second).max() > 0.1  # the two views differ
    other, _ = transforms.two_views(image, seeds[1], small)
    assert np.abs(first - other).max() > 0.1  # another seed, another view


@pytest.mark.parametrize(
    "interpolation, image_size, channels_in, channels_out",
    [("bicubic", 28, 1, 1), ("bicubic", 16, 3, 3), ("bilinear", 40, 3, 1), ("bicubic", 32, 1, 3)],
)
def test_resize_windows_equals_tf_image_resize_of_each_crop(
    interpolation, image_size, channels_in, channels_out
):
    # Windows of every shape, smaller and larger than the output (down- and upsampling), at the
    # edges too: the bicubic taps outside a window are dropped and the rest renormalised.
    view = dataclasses.replace(
        transforms.get_augmentation("small" if channels_out == 3 else "grayscale", image_size).view_a,
        interpolation=interpolation,
    )
    images = np.random.default_rng(0).integers(0, 256, (48, 30, 36, channels_in), np.uint8)
    draws = transforms.sample_batch_crop_draws([3, 4], 48)
    windows = transforms.crop_windows((30, 36), draws, [(0.02, 1.0)], [(0.4, 2.5)])
    batch = transforms.resize_windows(tf.constant(images), windows, view)
    for image, window, resized in zip(images, windows, batch):
        crop = transforms.crop_to_window(tf.constant(image), window)
        expected = tf.image.resize(crop, [image_size] * 2, interpolation) / 255.0
        expected = transforms.convert_channels(tf.clip_by_value(expected, 0.0, 1.0), channels_out)
        np.testing.assert_allclose(resized, expected, atol=5e-6)


def test_resize_windows_refuses_what_it_does_not_compute_as_tf_image_resize():
    images = tf.zeros([2, 8, 8, 1], tf.uint8)
    windows = tf.constant([[0, 0, 8, 8]] * 2)
    view = transforms.get_augmentation("grayscale", 8).view_a
    for changes in (dict(interpolation="area"), dict(antialias=True)):
        with pytest.raises(ValueError, match="Received: interpolation"):
            transforms.resize_windows(images, windows, dataclasses.replace(view, **changes))
    with pytest.raises(ValueError, match="images.shape"):
        transforms.resize_windows(tf.zeros([2, 8, 8]), windows, view)


def _uniform_views(value, count, view):
    """Both views of `count` constant images of `value` (of 255), from `batch_two_views`."""
    images = tf.fill([count, 12, 12, view.channels], tf.constant(value, tf.uint8))
    augmentation = transforms.TwoViewAugmentation(name="test", view_a=view, view_b=view)
    views = transforms.batch_two_views(images, tf.constant([5, 6]), augmentation)
    mean, std = view.mean[0], view.std[0]
    return [np.asarray(v)[..., 0] * std + mean for v in views]  # back to [0, 1]


def test_batch_two_views_draws_each_images_choices_at_the_tables_rates():
    count = 4000
    view = dataclasses.replace(transforms.get_augmentation("grayscale", 12).view_a, solarize_prob=0.0)
    # Constant images: crops, flips and contrast leave them as they are; brightness scales them by
    # U[0.6, 1.4] on the 80% of images that are jittered.
    for pixels in _uniform_views(77, count, view):
        assert np.allclose(pixels.std(axis=(1, 2)), 0.0, atol=1e-5)
        factors = pixels[:, 0, 0] / (77 / 255)
        unjittered = np.isclose(factors, 1.0, atol=1e-5)
        assert abs(unjittered.mean() - 0.2) < 0.03
        assert 0.59 < factors.min() and factors.max() < 1.41
        assert abs(np.mean(factors[~unjittered]) - 1.0) < 0.02
    view = dataclasses.replace(view, jitter_prob=0.0, solarize_prob=0.3)
    view_a, view_b = (pixels[:, 0, 0] > 0.5 for pixels in _uniform_views(200, count, view))
    for inverted in (view_a, view_b):
        assert abs((~inverted).mean() - 0.3) < 0.03  # 200 of 255 inverted to 55
    assert abs(np.corrcoef(view_a, view_b)[0, 1]) < 0.06  # the two views choose independently


def test_batch_two_views_flips_half_the_images():
    view = dataclasses.replace(
        transforms.get_augmentation("grayscale", 16).view_a, jitter_prob=0.0, solarize_prob=0.0,
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
    )
    augmentation = transforms.TwoViewAugmentation(name="test", view_a=view, view_b=view)
    # Left half dark, right half bright, the crops whole: a flipped view is bright on the left.
    half = np.concatenate([np.zeros((16, 8)), np.full((16, 8), 255)], axis=1).astype(np.uint8)
    images = tf.constant(np.repeat(half[None, :, :, None], 2000, axis=0))
    flipped = []
    for view_pixels in transforms.batch_two_views(images, tf.constant([1, 2]), augmentation):
        pixels = np.asarray(view_pixels)[..., 0] * view.std[0] + view.mean[0]
        left, right = pixels[:, :, :8].mean(axis=(1, 2)), pixels[:, :, 8:].mean(axis=(1, 2))
        assert np.all(np.abs(left - right) > 0.99)  # whole crops, exactly flipped or not
        flipped.append(left > right)
    for view_flipped in flipped:
        assert abs(view_flipped.mean() - 0.5) < 0.04
    assert abs(np.corrcoef(*flipped)[0, 1]) < 0.06
