"""The pretraining binary's data (`trainers.pretrain.Data`): files or the decoded split in memory."""

import numpy as np
import pytest
from PIL import Image

from keras_vicreg.data import fashion_mnist
from keras_vicreg.data import prepare_fashion_mnist
from tests.test_pretrain_config import load_config
from trainers import pretrain

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


def test_in_memory_split_gives_the_views_of_the_files(fashion_mnist_dir):
    # Unshuffled, the in-memory array and the files hold the images in the same order, and every
    # view is a function of (image, per-element seed): the batches must be equal.
    batches = []
    for in_memory in (False, True):
        config = _demo_config(split="train[:96]", num_examples=96, shuffle_buffer=0,
                              in_memory=in_memory)
        data = pretrain.Data(config, strategy=None, data_dir=fashion_mnist_dir)
        batches.append([np.asarray(view) for view in next(iter(data.epoch(1)))])
    for files, memory in zip(*batches):
        assert files.shape == (16, 28, 28, 1)
        np.testing.assert_array_equal(memory, files)


def test_in_memory_needs_images_of_one_size(tmp_path):
    for index, size in enumerate((20, 30)):
        (tmp_path / "class_a").mkdir(exist_ok=True)
        Image.new("RGB", (size, size)).save(tmp_path / "class_a" / f"{index}.png")
    config = _demo_config(dataset=str(tmp_path), augmentation="small", num_examples=2,
                          in_memory=True, batch_size=2, steps_per_epoch=1)
    with pytest.raises(ValueError, match="in_memory=False"):
        pretrain.Data(config, strategy=None)
