"""Tests of keras_vicreg.config.pretraining and of the recipes in configs/."""

import importlib.util
import pathlib

import ml_collections
import pytest

from keras_vicreg.config import pretraining

pytestmark = pytest.mark.backend_neutral

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
RECIPES = [
    "imagenet_resnet50_1000ep",
    "imagenet_resnet50_100ep",
    "cifar10_resnet18",
    "fashion_mnist_demo",
    "tiny",
]


def load_config(name, arg=None):
    """A config file's `get_config(arg)`, loaded by path as `--config=configs/<name>.py` does."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_every_recipe_and_its_runlocal_variant_are_valid(name, arg):
    config = load_config(name, arg)
    pretraining.validate(config)
    assert config.total_steps == config.steps_per_epoch * config.epochs


def test_imagenet_recipe_has_the_papers_numbers():
    config = load_config("imagenet_resnet50_1000ep")
    assert (config.batch_size, config.epochs, config.model.expander) == (
        2048, 1000, "8192-8192-8192"
    )
    assert (config.optimizer.base_learning_rate, config.optimizer.weight_decay) == (0.2, 1e-6)
    assert (config.steps_per_epoch, config.total_steps) == (625, 625_000)
    assert config.optimizer.warmup_steps == 6_250  # 10 epochs
    assert load_config("imagenet_resnet50_100ep").optimizer.base_learning_rate == 0.3


def test_overriding_the_batch_size_updates_the_derived_numbers():
    config = load_config("imagenet_resnet50_1000ep")
    config.batch_size = 256  # what --config.batch_size=256 does
    assert config.steps_per_epoch == 1_281_167 // 256
    assert config.total_steps == 5004 * 1000
    assert config.optimizer.warmup_steps == 5004 * 10


def test_runlocal_shrinks_the_run_and_keeps_the_method():
    full = load_config("imagenet_resnet50_1000ep")
    local = load_config("imagenet_resnet50_1000ep", "runlocal")
    assert (local.batch_size, local.total_steps, local.model.expander) == (16, 6, "64-64")
    assert (local.image_size, local.model.stem, local.model.filters) == (64, "small",
                                                                          (8, 16, 32, 64))
    assert (local.dataset, local.augmentation, local.model.sim_coeff) == (
        full.dataset, full.augmentation, full.model.sim_coeff
    )


def test_a_config_rejects_an_unknown_argument():
    with pytest.raises(ValueError, match="runlocal"):
        load_config("tiny", "fast")


def _invalid(config, num_replicas=1):
    with pytest.raises(ValueError) as error:
        pretraining.validate(config, num_replicas)
    return str(error.value)


def test_a_misspelled_key_is_an_error_naming_the_closest_key():
    config = load_config("tiny")
    config.optimizer.learning_rat = 0.1
    message = _invalid(config)
    assert "config.optimizer.learning_rat is not a key" in message
    assert "did you mean config.optimizer.base_learning_rate" in message


def test_a_missing_key_is_an_error():
    config = load_config("tiny")
    del config.model["expander"]
    assert "missing keys ['config.model.expander']" in _invalid(config)


def test_a_negative_learning_rate_is_an_error():
    config = load_config("tiny")
    config.optimizer.base_learning_rate = -0.1
    assert "config.optimizer.base_learning_rate must be > 0.0" in _invalid(config)


def test_a_batch_that_does_not_split_over_the_replicas_is_an_error():
    config = load_config("tiny")
    config.batch_size = 36
    message = _invalid(config, num_replicas=8)
    assert "multiple of the number of replicas, 8" in message
    assert "Received: config.batch_size=36" in message
    pretraining.validate(config, num_replicas=4)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("model.backbone", "resnet19", "config.model.backbone must be a backbone"),
        ("dataset", "imagenet2013", "config.dataset must be a tfds name"),
        ("augmentation", "strong", "config.augmentation must be an augmentation preset"),
        ("model.expander", "8192-x", "config.model.expander: The expander spec"),
        ("mixed_precision", "float16", "config.mixed_precision must be a dtype policy"),
        ("optimizer.end_factor", 1.5, "config.optimizer.end_factor must be in [0, 1]"),
        ("steps_per_epoch", 13, "config.steps_per_epoch must be at most num_examples // batch_size"),
        ("tf_intra_op_threads", 0, "config.tf_intra_op_threads must be >= 1"),
        ("eval_image_size", 0, "config.eval_image_size must be >= 1"),
        ("eval_crop_fraction", 1.5, "config.eval_crop_fraction must be in (0, 1]"),
    ],
)
def test_an_impossible_value_is_an_error(key, value, expected):
    config = load_config("tiny")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    assert expected in _invalid(config)


def test_every_problem_is_reported_at_once():
    config = load_config("tiny")
    config.optimizer.base_learning_rate = -1.0
    config.model.backbone = "vgg"
    config.epochs = 0
    message = _invalid(config)
    assert message.startswith("Invalid pretraining config (")
    for key in ("base_learning_rate", "model.backbone", "config.epochs"):
        assert key in message


def test_a_value_of_the_wrong_type_is_an_error():
    config = load_config("tiny").to_dict()  # a plain dict has no field types to enforce
    config["batch_size"] = "32"
    assert "config.batch_size must be of type int" in _invalid(ml_collections.ConfigDict(config))


def test_tf_intra_op_threads_sets_tensorflows_threads_per_op():
    # In a fresh process: TensorFlow takes the setting only before its first op.
    import subprocess
    import sys

    code = (
        "import keras, tensorflow as tf\n"
        "from keras_vicreg.training import recipe\n"
        "config = pretraining.default_config()\n"
        "config.tf_intra_op_threads = 1\n"
        "recipe.set_threads(config)\n"
        "expected = 1 if keras.backend.backend() == 'tensorflow' else 0\n"
        "assert tf.config.threading.get_intra_op_parallelism_threads() == expected\n"
        "tf.constant(1.0) + 1.0\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", "from keras_vicreg.config import pretraining\n" + code],
        cwd=CONFIGS.parent, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


def test_eval_image_size_defaults_to_the_pretraining_size_and_the_demo_sets_44():
    tiny = load_config("tiny")
    assert tiny.eval_image_size is None and pretraining.eval_image_size(tiny) == tiny.image_size
    tiny.image_size = 24  # what --config.image_size=24 does: the export follows
    assert pretraining.eval_image_size(tiny) == 24
    for arg in (None, "runlocal"):
        demo = load_config("fashion_mnist_demo", arg)
        assert (demo.image_size, pretraining.eval_image_size(demo)) == (28, 44)
        assert demo.eval_crop_fraction == 1.0  # whole images, as the demo's table reads them
    # The evaluation config takes its size from the pretraining config: one source of truth.
    assert "image_size" not in load_config("fashion_mnist_demo_eval")
