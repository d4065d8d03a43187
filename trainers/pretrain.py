r"""Pretrains a VICReg model from a config file of `configs/`.

    python -m trainers.pretrain --config=configs/cifar10_resnet18.py --workdir=/tmp/vicreg_cifar \
        --config.batch_size=512 [--strategy=mirrored] [--data_dir=...] [--manual_dir=...]

`--config.<key>=<value>` overrides any key (`configs/x.py:runlocal` shrinks a recipe for a smoke
run); the resolved config is validated before any data is read, printed, and saved. The workdir
gets:

    config.json                          the resolved config
    checkpoints/ckpt-<step>.weights.h5   weights and optimizer state, every
                                         `checkpoint_every_steps` steps and at each epoch end
    tensorboard/                         loss terms, learning rate, embedding std and rank, pictures
    export/backbone.keras                the pretrained backbone, at the pretraining size
    export/saved_model/                  the backbone as a SavedModel (`keras_vicreg.export`) whose
                                         `serve` reads `config.eval_image_size` pixels

Run the same command again after a kill or a preemption and training resumes from the newest
checkpoint, mid-epoch included, and reaches the weights of an uninterrupted run (the data order is
a function of the seed and the epoch; see `keras_vicreg.training.checkpointing`). A finished run is
only exported again.

The library half is `keras_vicreg.training.recipe`; this file is its flags and `main`. Exit status
(`keras_vicreg.training.exit_codes`): DONE (0); DIVERGED (1) when the loss or the weights became NaN
or infinite (the newest checkpoint, written before that step, is kept); INVALID_CONFIG (2) for an
invalid config or missing data.
"""

import sys

import keras
from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.config import pretraining
from keras_vicreg.training import distribute
from keras_vicreg.training import exit_codes
from keras_vicreg.training import recipe

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file of configs/, e.g. configs/cifar10_resnet18.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, summaries and exports go.", required=True
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", distribute.STRATEGIES, "Distribution (keras_vicreg.training.distribute)."
)
_TPU = flags.DEFINE_string("tpu", None, "With --strategy=tpu: the TPU's name or address.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Where manually downloaded data is (ImageNet's tar files)."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    recipe.set_threads(config)  # before TensorFlow's first op
    strategy = distribute.get_strategy(_STRATEGY.value, tpu=_TPU.value)
    try:
        pretraining.validate(config, distribute.num_replicas(strategy))
    except ValueError as error:
        print(error, file=sys.stderr)
        sys.exit(exit_codes.INVALID_CONFIG)
    recipe.save_config(config, workdir)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    with distribute.strategy_scope(strategy):
        try:
            data = recipe.Data(config, strategy, _DATA_DIR.value, _MANUAL_DIR.value)
        except ValueError as error:  # a wrong split or size, or data that is not there
            print(error, file=sys.stderr)
            sys.exit(exit_codes.INVALID_CONFIG)
        model = recipe.compile_model(recipe.make_model(config, data.channels, strategy), config)
        start_step = recipe.restore_checkpoint(model, config, workdir)
        try:
            recipe.fit(model, config, workdir, data, start_step)
        except recipe.TrainingDiverged as error:
            print(error, file=sys.stderr)
            sys.exit(exit_codes.DIVERGED)
    recipe.export(model, config, workdir, data)


if __name__ == "__main__":
    app.run(main)
