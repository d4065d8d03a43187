"""Tests of keras_vicreg.config (pretraining, common) and of the recipes in configs/."""

import importlib.util
import pathlib
import re

import ml_collections
import pytest

from keras_vicreg.config import common
from keras_vicreg.config import pretraining

pytestmark = pytest.mark.backend_neutral

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
# The pretraining recipes with every argument they take.
RECIPES = [
    ("imagenet_resnet50", None),
    ("imagenet_resnet50", "1000ep"),
    ("imagenet_resnet50", "100ep"),
    ("imagenet_resnet50", "1000ep,runlocal"),
    ("imagenet_resnet50", "100ep,runlocal"),
    ("cifar10_resnet18", None),
    ("cifar10_resnet18", "runlocal"),
    ("fashion_mnist_demo", None),
    ("fashion_mnist_demo", "runlocal"),
    ("tiny", None),
    ("tiny", "runlocal"),
]

# keras-vicreg 0.1's config files, each now a row of a file with an argument.
RENAMED = {
    "imagenet_resnet50_1000ep.py": "imagenet_resnet50.py:1000ep",
    "imagenet_resnet50_100ep.py": "imagenet_resnet50.py:100ep",
    "finetune_imagenet_1pct.py": "finetune_imagenet.py:1pct",
    "finetune_imagenet_10pct.py": "finetune_imagenet.py:10pct",
}

# The resolved numbers of every config and argument as 0.1's files gave them (computed from those
# files before they were merged and moved onto keras_vicreg.config.common; the 0.1 name of a
# renamed file is in RENAMED). The layout must not change a recipe.
PRETRAINING_KEYS = (
    "num_examples", "batch_size", "epochs", "steps_per_epoch", "total_steps",
    "optimizer.warmup_steps", "optimizer.base_learning_rate", "optimizer.weight_decay",
    "optimizer.eta", "image_size", "model.expander",
)
PRETRAINING_0_1 = {
    "cifar10_resnet18.py":
        (50_000, 256, 1000, 195, 195_000, 1950, 0.3, 1e-4, 0.02, 32, "2048-2048-2048"),
    "cifar10_resnet18.py:runlocal": (50_000, 16, 2, 3, 6, 3, 0.3, 1e-4, 0.02, 32, "64-64"),
    "fashion_mnist_demo.py":
        (60_000, 256, 9, 234, 2106, 234, 0.3, 1e-4, 0.02, 28, "1024-1024-1024"),
    "fashion_mnist_demo.py:runlocal": (60_000, 16, 2, 3, 6, 3, 0.3, 1e-4, 0.02, 28, "64-64"),
    "imagenet_resnet50.py:100ep":
        (1_281_167, 2048, 100, 625, 62_500, 6250, 0.3, 1e-6, 1e-3, 224, "8192-8192-8192"),
    "imagenet_resnet50.py:100ep,runlocal":
        (1_281_167, 16, 2, 3, 6, 3, 0.3, 1e-6, 1e-3, 64, "64-64"),
    "imagenet_resnet50.py:1000ep":
        (1_281_167, 2048, 1000, 625, 625_000, 6250, 0.2, 1e-6, 1e-3, 224, "8192-8192-8192"),
    "imagenet_resnet50.py:1000ep,runlocal":
        (1_281_167, 16, 2, 3, 6, 3, 0.2, 1e-6, 1e-3, 64, "64-64"),
    "tiny.py": (384, 32, 2, 12, 24, 12, 0.3, 1e-4, 1e-3, 16, "32-32"),
    "tiny.py:runlocal": (384, 16, 2, 3, 6, 3, 0.3, 1e-4, 1e-3, 16, "64-64"),
}
EVALUATION_KEYS = (
    "dataset", "train_split", "val_split", "image_size", "batch_size", "epochs", "learning_rate",
    "backbone_learning_rate", "head_learning_rate", "weight_decay", "precompute_features",
)
EVALUATION_0_1 = {
    "finetune_imagenet.py:1pct":
        ("imagenet2012_subset/1pct", "train", "validation", 224, 256, 20,
         0.02, 0.03, 0.08, 0.0, False),
    "finetune_imagenet.py:1pct,runlocal":
        ("imagenet2012_subset/1pct", "train", "validation", 16, 8, 1,
         0.02, 0.03, 0.08, 0.0, False),
    "finetune_imagenet.py:10pct":
        ("imagenet2012_subset/10pct", "train", "validation", 224, 256, 20,
         0.02, 0.01, 0.1, 0.0, False),
    "finetune_imagenet.py:10pct,runlocal":
        ("imagenet2012_subset/10pct", "train", "validation", 16, 8, 1,
         0.02, 0.01, 0.1, 0.0, False),
    "linear_eval_imagenet.py":
        ("imagenet2012", "train", "validation", 224, 256, 100, 0.02, 0.0, 0.02, 1e-6, False),
    "linear_eval_imagenet.py:precompute":
        ("imagenet2012", "train", "validation", 224, 256, 100, 0.02, 0.0, 0.02, 1e-6, True),
    "linear_eval_imagenet.py:runlocal":
        ("imagenet2012", "train", "validation", 16, 8, 1, 0.02, 0.0, 0.02, 1e-6, False),
    "linear_eval_imagenet.py:places365_small":
        ("places365_small", "train", "validation", 224, 256, 100, 0.02, 0.0, 0.02, 1e-6, False),
    "linear_eval_imagenet.py:voc2007":
        ("voc/2007", "train+validation", "test", 224, 256, 100, 0.02, 0.0, 0.02, 1e-6, False),
    "linear_eval_imagenet.py:i_naturalist2018":
        ("i_naturalist2018", "train", "validation", 224, 256, 100, 0.02, 0.0, 0.02, 1e-6, False),
    "linear_eval_imagenet.py:voc2007,precompute":
        ("voc/2007", "train+validation", "test", 224, 256, 100, 0.02, 0.0, 0.02, 1e-6, True),
    "linear_eval_imagenet.py:voc2007,precompute,runlocal":
        ("voc/2007", "train+validation", "test", 16, 8, 1, 0.02, 0.0, 0.02, 1e-6, True),
    "linear_eval_imagenet.py:precompute,runlocal":
        ("imagenet2012", "train", "validation", 16, 8, 1, 0.02, 0.0, 0.02, 1e-6, True),
}
NEW_SINCE_0_1 = {
    "paper_flexibility.py": "test_paper_tables.py",
    "paper_ablations.py": "test_paper_tables.py",
    "voc07_svm.py": "test_svm.py",
    "linear_eval_places205.py": "test_vissl_linear.py",
    "linear_eval_inaturalist18.py": "test_vissl_linear.py",
    "coco_retrieval.py": "test_coco_retrieval.py",
    "detection.py": "test_detection.py",
    "segmentation.py": "test_segmentation.py",
}
# 0.1's image_size (44) of the demo evaluation is now the demo config's eval_image_size (below).
DEMO_EVAL_KEYS = ("train_split", "test_split", "batch_size", "linear.epochs", "knn.k")
DEMO_EVAL_0_1 = {
    "fashion_mnist_demo_eval.py": ("train", "test", 500, 20, 200),
    "fashion_mnist_demo_eval.py:runlocal": ("train[:512]", "test[:256]", 500, 5, 20),

}


def load_config(name, arg=None):
    """A config file's `get_config(arg)`, loaded by path as `--config=configs/<name>.py` does."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _load(file_and_arg):
    """`load_config` of "name.py:arg" as written on the command line."""
    file, _, arg = file_and_arg.partition(":")
    return load_config(file.removesuffix(".py"), arg or None)


def _values(config, keys):
    """The values of dotted `keys` ("optimizer.eta") of a resolved config."""
    values = []
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        values.append(node)
    return tuple(values)


@pytest.mark.parametrize("name, arg", RECIPES)
def test_every_recipe_and_every_argument_are_valid(name, arg):
    config = load_config(name, arg)
    pretraining.validate(config)
    assert config.total_steps == config.steps_per_epoch * config.epochs


@pytest.mark.parametrize(
    "table, keys",
    [(PRETRAINING_0_1, PRETRAINING_KEYS), (EVALUATION_0_1, EVALUATION_KEYS),
     (DEMO_EVAL_0_1, DEMO_EVAL_KEYS)],
    ids=["pretraining", "evaluation", "demo_eval"],
)
def test_every_config_and_argument_resolves_to_the_numbers_of_0_1(table, keys):
    for file_and_arg, expected in table.items():
        assert _values(_load(file_and_arg), keys) == expected, file_and_arg


def test_every_config_file_is_in_the_table_and_the_renamed_ones_are_gone():
    tables = {**PRETRAINING_0_1, **EVALUATION_0_1, **DEMO_EVAL_0_1}
    files = {name.partition(":")[0] for name in tables}
    # Each config new since 0.1 and the test module that holds its values.
    tested_elsewhere = {name: test for name, test in NEW_SINCE_0_1.items()
                        if (CONFIGS / name).exists()}
    for test in tested_elsewhere.values():
        assert (pathlib.Path(__file__).parent / test).exists(), test
    assert files | set(tested_elsewhere) == {path.name for path in CONFIGS.glob("*.py")}
    assert not set(RENAMED) & files
    assert set(RENAMED.values()) <= set(tables)


@pytest.mark.parametrize(
    "name, default, explicit",
    [("imagenet_resnet50", None, "1000ep"), ("imagenet_resnet50", "runlocal", "runlocal,1000ep"),
     ("finetune_imagenet", None, "1pct"), ("finetune_imagenet", "runlocal", "1pct,runlocal"),
     ("linear_eval_imagenet", None, "imagenet2012")],
)
def test_a_config_without_its_choice_takes_the_documented_default(name, default, explicit):
    assert load_config(name, default).to_dict() == load_config(name, explicit).to_dict()


def test_imagenet_recipe_has_the_papers_numbers():
    config = load_config("imagenet_resnet50", "1000ep")
    assert (config.batch_size, config.epochs, config.model.expander) == (
        2048, 1000, "8192-8192-8192"
    )
    assert (config.optimizer.base_learning_rate, config.optimizer.weight_decay) == (0.2, 1e-6)
    assert (config.steps_per_epoch, config.total_steps) == (625, 625_000)
    assert config.optimizer.warmup_steps == 6_250  # 10 epochs
    assert load_config("imagenet_resnet50", "100ep").optimizer.base_learning_rate == 0.3


def test_overriding_the_batch_size_updates_the_derived_numbers():
    config = load_config("imagenet_resnet50", "1000ep")
    config.batch_size = 256  # what --config.batch_size=256 does
    assert config.steps_per_epoch == 1_281_167 // 256
    assert config.total_steps == 5004 * 1000
    assert config.optimizer.warmup_steps == 5004 * 10


def test_overriding_the_epochs_updates_the_total_steps():
    config = load_config("fashion_mnist_demo")
    config.epochs = 10  # --config.epochs=10
    config.optimizer.warmup_epochs = 2
    assert (config.total_steps, config.optimizer.warmup_steps) == (2340, 468)
    local = load_config("imagenet_resnet50", "100ep,runlocal")
    local.epochs = 1  # steps_per_epoch stays runlocal's 3
    assert (local.steps_per_epoch, local.total_steps) == (3, 3)


def test_overriding_a_derived_number_replaces_its_formula():
    config = load_config("tiny")
    config.steps_per_epoch = 5  # --config.steps_per_epoch=5: shorter epochs
    assert (config.total_steps, config.optimizer.warmup_steps) == (10, 5)


def test_command_line_overrides_reach_the_derived_numbers():
    # What trainers/pretrain.py's config flag does with --config=...:arg --config.key=value.
    from absl import flags
    from ml_collections import config_flags

    argv = ["test", f"--config={CONFIGS / 'imagenet_resnet50.py'}:100ep",
            "--config.batch_size=512", "--config.epochs=20"]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                    sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert (config.steps_per_epoch, config.total_steps) == (2502, 50_040)
    assert config.optimizer.warmup_steps == 25_020  # 10 epochs


def test_runlocal_shrinks_the_run_and_keeps_the_method():
    full = load_config("imagenet_resnet50", "1000ep")
    local = load_config("imagenet_resnet50", "1000ep,runlocal")
    assert (local.batch_size, local.total_steps, local.model.expander) == (16, 6, "64-64")
    assert (local.image_size, local.model.stem, local.model.filters) == (64, "small",
                                                                          (8, 16, 32, 64))
    assert (local.dataset, local.augmentation, local.model.sim_coeff) == (
        full.dataset, full.augmentation, full.model.sim_coeff
    )


@pytest.mark.parametrize(
    "name, arg, allowed",
    [("tiny", "fast", "['runlocal']"),
     ("imagenet_resnet50", "300ep", "['1000ep', '100ep', 'runlocal']"),
     ("imagenet_resnet50", "1000ep,runlocl", "['1000ep', '100ep', 'runlocal']"),
     ("finetune_imagenet", "5pct", "['1pct', '10pct', 'runlocal']"),
     ("fashion_mnist_demo_eval", "fast", "['runlocal']")],
)
def test_a_config_rejects_an_unknown_argument_naming_the_allowed_ones(name, arg, allowed):
    with pytest.raises(ValueError, match=re.escape(f"list of {allowed}. Received: arg={arg!r}")):
        load_config(name, arg)


def test_a_config_rejects_two_rows_of_one_choice():
    with pytest.raises(ValueError, match=r"takes one of \['1000ep', '100ep'\]"):
        load_config("imagenet_resnet50", "100ep,1000ep")


def test_parse_arg_reads_choices_and_flags_in_any_order():
    args = common.parse_arg(" runlocal , 10pct,", flags=("precompute",), labels=("1pct", "10pct"))
    assert (args.labels, args.runlocal, args.precompute) == ("10pct", True, False)
    assert common.parse_arg(None, labels=("1pct", "10pct")).labels == "1pct"


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
        ("model.backbone", "convnext_tiny", "convnext_tiny needs an image_size of at least 32"),
        ("model.vit_pooling", "max", "config.model.vit_pooling must be a ViT pooling"),
        ("dataset", "imagenet2013", "config.dataset must be a tfds name"),
        ("augmentation", "strong", "config.augmentation must be an augmentation preset"),
        ("model.expander", "8192-x", "config.model.expander: The expander spec"),
        ("mixed_precision", "float16", "config.mixed_precision must be a dtype policy"),
        ("optimizer.end_factor", 1.5, "config.optimizer.end_factor must be in [0, 1]"),
        ("steps_per_epoch", 13, "config.steps_per_epoch must be at most num_examples // batch_size"),
        ("tf_intra_op_threads", 0, "config.tf_intra_op_threads must be >= 1"),
        # Values that passed validation in 0.1 and failed later, after the workdir was written:
        ("batch_size", 0, "config.batch_size must be >= 1. Received: config.batch_size=0"),
        ("seed", -1, "config.seed must be an int in [0, 2**32)"),
        ("summary_examples", 10_000, "config.summary_examples must be at most num_examples"),
        ("total_steps", 7, "config.total_steps is derived, steps_per_epoch * epochs"),
        ("optimizer.warmup_steps", 10_000, "config.optimizer.warmup_steps must be at most"),
        ("eval_image_size", 0, "config.eval_image_size must be >= 1"),
        ("eval_crop_fraction", 1.5, "config.eval_crop_fraction must be in (0, 1]"),
        ("max_image_pixels", 0,
         "config.max_image_pixels must be >= 1. Received: config.max_image_pixels=0"),
        ("max_undecodable_fraction", 1.5, "config.max_undecodable_fraction must be in [0, 1]. "
         "Received: config.max_undecodable_fraction=1.5"),
        ("max_undecodable_fraction", -0.01, "Received: config.max_undecodable_fraction=-0.01"),
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


@pytest.mark.parametrize(
    "batch, base",
    [(16, 0.8), (128, 0.8), (129, 0.5), (256, 0.5), (384, 0.4), (512, 0.4), (513, 0.3),
     (2048, 0.3)],
)
def test_auto_base_learning_rate_is_the_papers_table_row_of_the_smallest_batch_at_least_it(
        batch, base):
    config = load_config("tiny")
    config.num_examples = 4 * batch
    config.batch_size = batch
    config.optimizer.base_learning_rate = "auto"
    assert common.base_learning_rate(config) == base
    pretraining.validate(config)
    # Written into the config, so that the printed and the saved config show it.
    assert config.optimizer.base_learning_rate == base
    assert f"base_learning_rate: {base}" in str(config)
    pretraining.validate(config)  # and valid again


def test_auto_from_the_command_line_and_a_number_beside_it():
    from absl import flags
    from ml_collections import config_flags

    for value, expected in (("auto", 0.5), ("0.25", 0.25), ("1", 1)):
        argv = ["test", f"--config={CONFIGS / 'tiny.py'}", "--config.batch_size=256",
                "--config.num_examples=1024", f"--config.optimizer.base_learning_rate={value}"]
        flag_values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                        lock_config=True, sys_argv=argv)
        flag_values(argv)
        config = pretraining.validate(flag_values.config)
        assert config.optimizer.base_learning_rate == expected


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"optimizer.name": "adamw", "optimizer.base_learning_rate": "auto"},
         "is the paper's table for LARS; it does not apply to AdamW"),
        ({"optimizer.base_learning_rate": "fast"},
         "must be a number > 0 or 'auto' (the paper's table by batch size). "
         "Received: config.optimizer.base_learning_rate='fast'"),
        ({"optimizer.base_learning_rate": True},
         "Received: config.optimizer.base_learning_rate=True"),
        ({"optimizer.base_learning_rate": 0.0},
         "config.optimizer.base_learning_rate must be > 0.0"),
        ({"optimizer.name": "sgd"}, "config.optimizer.name must be an optimizer, one of "
         "['lars', 'adamw']"),
        ({"optimizer.beta_2": 1.0}, "config.optimizer.beta_2 must be in [0, 1)"),
        ({"optimizer.epsilon": 0.0}, "config.optimizer.epsilon must be > 0.0"),
        ({"optimizer.name": "adamw", "optimizer.base_learning_rate": 0.001,
          "optimizer.eta": 0.02},
         "config.optimizer.eta is read by 'lars' only; with config.optimizer.name='adamw' it "
         "would be ignored: leave it at 0.001 or set config.optimizer.name='lars'"),
        ({"optimizer.beta_1": 0.8}, "config.optimizer.beta_1 is read by 'adamw' only"),
        ({"optimizer.exclude_from_decay": ("bias$", "(")},
         "config.optimizer.exclude_from_decay: Invalid regular expression"),
    ],
)
def test_an_invalid_optimizer_setting_is_an_error(overrides, expected):
    config = load_config("tiny")
    for key, value in overrides.items():
        config.optimizer[key.split(".")[1]] = value
    assert expected in _invalid(config)
    assert config.optimizer.base_learning_rate != 0.8  # an invalid "auto" is left as it was


def test_the_default_optimizer_is_lars_with_the_exclusion_rule():
    config = pretraining.default_config()
    assert config.optimizer.name == "lars"
    assert config.optimizer.exclude_from_decay == (
        r"(^|/)bias$", r"(^|/)(gamma|beta)$", r"(^|/)class_token$", r"(^|/)position_embedding/")


def test_a_vit_needs_images_its_patches_tile():
    config = load_config("tiny")
    config.model.backbone, config.image_size = "vit_tiny", 18
    assert ("config.image_size: vit_tiny needs an image_size that is a multiple of its patch size "
            "4. Received: config.image_size=18") in _invalid(config)


@pytest.mark.parametrize("backbone", ["vit_tiny", "resnet50x2", "resnet200x2", "resnet200"])
def test_the_papers_backbones_are_valid_config_choices(backbone):
    config = load_config("tiny")
    config.model.backbone = backbone
    pretraining.validate(config)
