"""keras_vicreg.training.pretraining_data: the decoded split in memory, synthetic images, seeds."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from keras_vicreg.data import fashion_mnist
from keras_vicreg.data import prepare_fashion_mnist
from tests.test_pretrain_config import load_config
from keras_vicreg.data.synthetic import synthetic_images
from keras_vicreg.training import pretraining_data

pytestmark = pytest.mark.backend_neutral


@pytest.fixture(scope="module")
def fashion_mnist_dir(tmp_path_factory):
    if not fashion_mnist.check_local_files():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({fashion_mnist.DEBIAN_DIR})")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    prepare_fashion_mnist(data_dir)
    return data_dir


def _demo_config(**overrides):
    config = load_config("fashion_mnist_demo", "runlocal")
    config.update(overrides)
    return config


def test_in_memory_split_holds_the_decoded_files_and_resumes_mid_epoch(fashion_mnist_dir):
    config = _demo_config(split="train[:96]", num_examples=96, in_memory=True)
    data = pretraining_data.Data(config, strategy=None, data_dir=fashion_mnist_dir)
    files = tfds.load("fashion_mnist", split="train[:96]", data_dir=fashion_mnist_dir,
                      batch_size=-1)["image"]
    np.testing.assert_array_equal(data._source(), files)

    assert data.probe  # Fashion-MNIST has labels: they ride beside the views for the probe

    def batches(epoch, skip=0):
        return [[np.asarray(part) for part in (*views, labels)]
                for views, labels in data.epoch(epoch, skip)]

    epoch = batches(1)
    assert len(epoch) == 96 // config.batch_size and epoch[0][0].shape == (16, 28, 28, 1)
    for again, first in zip(batches(1, skip=2), epoch[2:]):  # a resumed epoch: the same batches
        for view, expected in zip(again, first):
            np.testing.assert_array_equal(view, expected)
    assert not np.allclose(batches(2)[0][0], epoch[0][0])  # a new epoch draws new views


def test_in_memory_needs_images_of_one_size(tmp_path):
    for index, size in enumerate((20, 30)):
        (tmp_path / "class_a").mkdir(exist_ok=True)
        Image.new("RGB", (size, size)).save(tmp_path / "class_a" / f"{index}.png")
    config = _demo_config(dataset=str(tmp_path), augmentation="small", num_examples=2,
                          in_memory=True, batch_size=2, steps_per_epoch=1)
    with pytest.raises(ValueError, match="in_memory=False"):
        pretraining_data.Data(config, strategy=None)


def test_synthetic_data_gives_the_same_views_for_the_same_seed_and_epoch():
    config = load_config("tiny")
    first, again = (pretraining_data.Data(config, strategy=None) for _ in range(2))
    for epoch in (0, 1):
        for view, expected in zip(next(iter(again.epoch(epoch))), next(iter(first.epoch(epoch)))):
            np.testing.assert_array_equal(np.asarray(view), np.asarray(expected))
    a, b = (np.asarray(next(iter(first.epoch(epoch)))[0]) for epoch in (0, 1))
    assert a.shape == (config.batch_size, config.image_size, config.image_size, first.channels)
    assert not np.allclose(a, b)  # each epoch its own order and views
    np.testing.assert_array_equal(
        synthetic_images(4, 9, 3, seed=5), synthetic_images(4, 9, 3, seed=5)
    )
    assert synthetic_images(4, 9, 1, seed=5).shape == (4, 9, 9, 1)
    with pytest.raises(ValueError, match="Received: channels=2"):
        synthetic_images(4, 9, 2, seed=5)


def test_epoch_seed_depends_on_the_seed_and_the_epoch_alone():
    seeds = {pretraining_data.epoch_seed(seed, epoch) for seed in (0, 1) for epoch in (0, 1, 2)}
    assert len(seeds) == 6
    assert pretraining_data.epoch_seed(3, 7) == pretraining_data.epoch_seed(3, 7)
