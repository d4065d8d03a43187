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

A second job on the same workdir is refused while the first runs (`<workdir>/job.lock`). SIGTERM
or SIGINT (a preemption notice, Ctrl-C) finishes the step, checkpoints it and exits PREEMPTED.
A config that differs from the workdir's `config.json` in keys that change what the checkpoints
mean is refused unless `--allow_config_change`.

The library half is `keras_vicreg.training.recipe`; this file is its flags and `main`. Exit statuses
(`keras_vicreg.training.exit_codes`): DONE 0; CRASH 1; INVALID_CONFIG 2 (an invalid config or flag,
missing or short data, a locked workdir, a changed config, checkpoints that do not load); DIVERGED
3 (a NaN or infinite loss or weight: the newest finite checkpoint is kept); PREEMPTED 75.
"""


import keras
from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.config import pretraining
from keras_vicreg.training import distribute
from keras_vicreg.training import exit_codes
from keras_vicreg.training import job
from keras_vicreg.training import multihost
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
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume even when the config differs from the workdir's config.json in keys that change "
    "what the checkpoints mean (model, precision, batch, optimizer, schedule, data).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    recipe.set_threads(config)  # before TensorFlow's first op
    try:
        strategy = distribute.get_strategy(_STRATEGY.value, tpu=_TPU.value)
        pretraining.validate(config, distribute.num_replicas(strategy))
        recipe.keep_what_the_checkpoints_hold(config, workdir)
        with job.running(workdir, config.peer_timeout_s) as running_job:
            multihost.on_writer(recipe.save_config, config, workdir,
                                allow_change=_ALLOW_CONFIG_CHANGE.value)
            keras.utils.set_random_seed(config.seed)
            keras.mixed_precision.set_dtype_policy(config.mixed_precision)
            with distribute.strategy_scope(strategy):
                data = recipe.Data(config, strategy, _DATA_DIR.value, _MANUAL_DIR.value, workdir)
                model = recipe.compile_model(
                    recipe.make_model(config, data.channels, data.num_classes), config)
                start_step = recipe.restore_checkpoint(model, config, workdir)
                recipe.fit(model, config, workdir, data, start_step,
                           stop_signal=running_job.stop_signal, watchdog=running_job.watchdog)
            recipe.export(model, config, workdir, data, watchdog=running_job.watchdog)
    except exit_codes.EXPECTED as error:
        job.exit_for(error)
    except Exception as error:  # noqa: BLE001  (several processes: exit at once, see exit_for)
        if multihost.process_count() == 1:
            raise
        job.exit_for(error)


if __name__ == "__main__":
    app.run(main, flags_parser=job.parse_flags)
