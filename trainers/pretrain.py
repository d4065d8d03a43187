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
    export/backbone.keras                the pretrained backbone
    export/saved_model/                  the backbone as a SavedModel (`keras_vicreg.export`)

Run the same command again after a kill or a preemption and training resumes from the newest
checkpoint, mid-epoch included, and reaches the weights of an uninterrupted run (the data order is
a function of the seed and the epoch; see `keras_vicreg.training.checkpointing`). A finished run is only
exported again.

Exit status: 0 when done; 1 when the loss or the weights became NaN or infinite (the newest
checkpoint, written before that step, is kept); 2 for an invalid config or missing data.
"""

import json
import os
import sys

import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags
from tensorflow.io import gfile

import keras
import keras_vicreg
from keras_vicreg.data import transforms
from keras_vicreg.experimental import cpu as cpu_kernels
from keras_vicreg.models import backbones
from keras_vicreg.training import callbacks as vicreg_callbacks
from keras_vicreg.training import checkpointing
from keras_vicreg import data as vicreg_data
from keras_vicreg.training import distribute
from keras_vicreg.config import pretraining
from keras_vicreg.training import summaries

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

EXIT_NON_FINITE = 1
EXIT_INVALID_CONFIG = 2


def epoch_seed(seed, epoch):
    """The seed of one epoch's data order and views: a function of the run's seed and the epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def synthetic_images(count, image_size, channels, seed):
    """Generated uint8 images for smoke tests: random colours in 4 x 4 blocks, plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(count, 4, 4, channels))
    repeat = -(-image_size // 4)
    images = np.repeat(np.repeat(coarse, repeat, axis=1), repeat, axis=2)[:, :image_size,
                                                                          :image_size]
    images = images + rng.normal(0, 20, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


class Data:
    """The pretraining data of a config: each epoch's pairs of views, and a fixed batch.

    Args:
        config: the pretraining config.
        strategy: what `distribute.get_strategy` returned.
        data_dir, manual_dir: tensorflow-datasets' directories.
    """

    def __init__(self, config, strategy, data_dir=None, manual_dir=None):
        self.config = config
        self.strategy = strategy
        self.data_dir, self.manual_dir = data_dir, manual_dir
        spec_augmentation = config.augmentation
        if spec_augmentation is None:
            spec_augmentation = vicreg_data.dataset_spec(config.dataset).augmentation
        self.augmentation = transforms.get_augmentation(spec_augmentation, config.image_size)
        self.channels = self.augmentation.view_a.channels
        if config.dataset == pretraining.SYNTHETIC:
            images = synthetic_images(
                config.num_examples, config.image_size, self.channels, config.seed
            )
            self._source = lambda: _from_tensor_slices(images)
        else:
            builder = self._check_split_size()
            if config.in_memory:  # an array: two_view_dataset augments whole batches of it
                # One host tensor for every epoch's pipeline, not a copy of the array per epoch.
                images = _host_tensor(self._decode_split(builder))
                self._source = lambda: images
            else:
                self._source = lambda: config.dataset

    def _split(self):
        return self.config.split or vicreg_data.dataset_spec(self.config.dataset).pretrain_split

    def _check_split_size(self):
        """Checks `num_examples` against the split; returns the dataset's tfds builder."""
        dataset, split = self.config.dataset, self._split()
        if vicreg_data.sources.is_folder(dataset):
            builder = vicreg_data.image_folder(dataset)
        else:
            builder = vicreg_data.load_builder(
                dataset, data_dir=self.data_dir, manual_dir=self.manual_dir
            )
        size = builder.info.splits[split].num_examples
        if size != self.config.num_examples:
            raise ValueError(
                f"config.num_examples must be the number of images of {dataset!r} split "
                f"{split!r}, {size}: set --config.num_examples={size}. "
                f"Received: config.num_examples={self.config.num_examples}"
            )
        return builder

    def _decode_split(self, builder):
        """The split's images decoded into one uint8 array (`config.in_memory`)."""
        import tensorflow_datasets as tfds

        shape = builder.info.features["image"].shape
        if None in shape:
            raise ValueError(
                "config.in_memory keeps the decoded images in one array, which needs images of "
                f"one size; {self.config.dataset!r} has images of shape {shape}: set "
                f"--config.in_memory=False. Received: config.in_memory=True"
            )
        size = self.config.num_examples * int(np.prod(shape))
        print(f"Decoding {self.config.num_examples} images of {self.config.dataset!r} into "
              f"memory ({size / 2**20:.0f} MiB).", flush=True)
        images = builder.as_dataset(split=self._split(), batch_size=-1)["image"]
        return tfds.as_numpy(images)

    def _pipeline(self, epoch, batch_size, input_context=None):
        config = self.config
        return vicreg_data.two_view_dataset(
            self._source(),
            batch_size,
            augmentation=self.augmentation,
            split=config.split,
            seed=epoch_seed(config.seed, epoch),
            shuffle_buffer=config.shuffle_buffer,
            input_context=input_context,
            data_dir=self.data_dir,
            manual_dir=self.manual_dir,
            download=True,
        )

    def epoch(self, epoch, skip=0):
        """Epoch `epoch`'s batches of pairs, in a fixed order, without the first `skip`."""
        if distribute.num_replicas(self.strategy) == 1:
            return self._pipeline(epoch, self.config.batch_size).skip(skip)
        if keras.backend.backend() != "tensorflow":  # JAX's DataParallel splits global batches
            return self._pipeline(epoch, self.config.batch_size).skip(skip)
        return self.strategy.distribute_datasets_from_function(
            lambda context: self._pipeline(epoch, self.config.batch_size, context).skip(skip)
        )

    def fixed_views(self):
        """The first `summary_examples` pairs of the first epoch, as numpy arrays."""
        batch = next(iter(self._pipeline(0, self.config.summary_examples).take(1)))
        return tuple(np.asarray(view) for view in batch)


def _host_tensor(array):
    import tensorflow as tf

    with tf.device("CPU:0"):
        return tf.convert_to_tensor(array)


def _from_tensor_slices(images):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(images)


def convnet(filters, input_shape):
    """A two-layer convnet backbone for tests: two stride-2 3x3 convolutions, BN, ReLU, pooling."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for index, width in enumerate(filters[:2]):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn_{index}")(x)
        x = keras.layers.ReLU(name=f"relu_{index}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name="convnet")


def make_model(config, channels, strategy):
    """The VICReg model of `config.model`, on images of `config.image_size` and `channels`."""
    options = config.model
    input_shape = (config.image_size, config.image_size, channels)
    if options.backbone == "convnet":
        backbone = convnet(options.filters, input_shape)
    else:
        backbone = backbones.resnet(
            int(options.backbone.removeprefix("resnet")),
            source=options.source,
            stem=options.stem,
            zero_init_residual=options.zero_init_residual,
            input_shape=input_shape,
            filters=tuple(options.filters),
        )
    if options.experimental_cpu_kernels:
        cpu_kernels.use_cpu_kernels(backbone)
    # Synchronised BatchNormalization matters, and exists, only across tf.distribute replicas.
    sync = (
        options.sync_batch_norm
        and keras.backend.backend() == "tensorflow"
        and distribute.num_replicas(strategy) > 1
    )
    if sync:
        distribute.sync_batch_norm(backbone)
    return keras_vicreg.VICReg(
        backbone,
        options.expander,
        sim_coeff=options.sim_coeff,
        std_coeff=options.std_coeff,
        cov_coeff=options.cov_coeff,
        covariance=options.covariance,
        sync_batch_norm=sync,
    )


def make_optimizer(config):
    """LARS with the warmup-cosine schedule of `config.optimizer`."""
    options = config.optimizer
    schedule = keras_vicreg.WarmupCosine(
        options.base_learning_rate,
        total_steps=config.total_steps,
        warmup_steps=options.warmup_steps,
        batch_size=config.batch_size,
        end_factor=options.end_factor,
    )
    return keras_vicreg.LARS(
        schedule, momentum=options.momentum, weight_decay=options.weight_decay, eta=options.eta,
        clip_trust_ratio=options.clip_trust_ratio,
    )


def restore_checkpoint(model, config, workdir):
    """Restores the newest checkpoint of `workdir`, if any; returns the step to start from."""
    directory = os.path.join(workdir, "checkpoints")
    step = checkpointing.restore_latest(model, directory)
    if step == 0:
        print(f"Starting from scratch: no checkpoint in {directory}.", flush=True)
    else:
        epoch, batch = divmod(step, config.steps_per_epoch)
        print(
            f"Resuming from step {step} of {config.total_steps} (epoch {epoch + 1}, after batch "
            f"{batch}): {checkpointing.checkpoint_path(directory, step)}",
            flush=True,
        )
    return step


def make_callbacks(config, workdir, data, start_step):
    """NaN guard first, checkpoint last: a non-finite step never reaches the checkpoint."""
    view = data.augmentation.view_a
    return [
        vicreg_callbacks.LearningRateLogger(),
        vicreg_callbacks.NaNGuard(check_weights=config.nan_check_weights),
        vicreg_callbacks.CollapseMonitor(
            threshold=config.collapse_threshold, patience=config.collapse_patience_steps
        ),
        summaries.ProgressPrinter(
            config.log_every_steps, config.total_steps, config.steps_per_epoch, start_step
        ),
        summaries.TensorBoardSummaries(
            os.path.join(workdir, "tensorboard"),
            fixed_views=data.fixed_views(),
            mean=view.mean,
            std=view.std,
            scalar_every_steps=config.log_every_steps,
            embedding_every_steps=config.summary_every_steps,
            image_pairs=config.summary_image_pairs,
            initial_step=start_step,
        ),
        checkpointing.StepCheckpoint(
            os.path.join(workdir, "checkpoints"),
            config.checkpoint_every_steps,
            initial_step=start_step,
            keep=config.keep_checkpoints,
        ),
    ]


def fit(model, config, workdir, data, start_step):
    """Trains to `config.total_steps`; exits with status 1 on a non-finite loss or weight."""
    try:
        checkpointing.resumable_fit(
            model,
            data.epoch,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            initial_step=start_step,
            callbacks=make_callbacks(config, workdir, data, start_step),
        )
    except vicreg_callbacks.NonFiniteTrainingError as error:
        latest = checkpointing.latest_checkpoint(os.path.join(workdir, "checkpoints"))
        kept = (
            "No checkpoint was written before it."
            if latest is None
            else f"The newest checkpoint, step {latest[0]} ({latest[1]}), holds the last finite "
            "weights and is kept: fix the cause (e.g. a lower --config.optimizer.base_learning_rate)"
            " and run the command again to resume from it."
        )
        print(f"Training diverged at step {error.step}.\n{error}\n{kept}", file=sys.stderr)
        sys.exit(EXIT_NON_FINITE)


def export(model, config, workdir, data):
    """Writes the backbone as a .keras file and, from TensorFlow or JAX, as a SavedModel."""
    directory = os.path.join(workdir, "export")
    gfile.makedirs(directory)
    # Stock Keras layers in the files, so that they load without keras_vicreg.
    cpu_kernels.use_stock_layers(model.backbone)
    model.backbone.save(os.path.join(directory, "backbone.keras"))
    print(f"Saved the backbone to {os.path.join(directory, 'backbone.keras')}", flush=True)
    if keras.backend.backend() == "torch":
        print(
            "No SavedModel from the torch backend (Keras needs torch_xla): export backbone.keras "
            "with KERAS_BACKEND=tensorflow or jax and keras_vicreg.export.export_backbone.",
            flush=True,
        )
        return
    from keras_vicreg import export as vicreg_export

    view = data.augmentation.view_a
    path = os.path.join(directory, "saved_model")
    vicreg_export.export_backbone(
        model.backbone, path, image_size=config.image_size, mean=view.mean, std=view.std,
        config=config,
    )
    print(f"Exported the backbone as a SavedModel to {path}", flush=True)


def save_config(config, workdir):
    """Prints the resolved config and writes it to workdir/config.json (warns if it changed)."""
    print(f"Resolved config ({keras.backend.backend()} backend):\n{config}", flush=True)
    gfile.makedirs(workdir)
    path = os.path.join(workdir, "config.json")
    resolved = json.loads(config.to_json_best_effort())
    if gfile.exists(path):
        with gfile.GFile(path) as file:
            previous = json.load(file)
        if previous != resolved:
            print(
                f"Warning: the config differs from the one in {path}; resuming with the new one.",
                file=sys.stderr,
            )
    with gfile.GFile(path, "w") as file:
        json.dump(resolved, file, indent=2, sort_keys=True)


def set_threads(config):
    """Applies `config.tf_intra_op_threads`; call it before TensorFlow runs its first op.

    On a 2-core CPU, one thread per op (two ops side by side) trained the demo's ResNet-18 in
    0.42-0.43 s per step against 0.45-0.46 s with two threads on every op (timing `fit` on random
    views, as `benchmarks/train_step.py --intra_op_threads 1` does).
    """
    threads = config.tf_intra_op_threads
    if threads is not None and threads >= 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    set_threads(config)
    strategy = distribute.get_strategy(_STRATEGY.value, tpu=_TPU.value)
    try:
        pretraining.validate(config, distribute.num_replicas(strategy))
    except ValueError as error:
        print(error, file=sys.stderr)
        sys.exit(EXIT_INVALID_CONFIG)
    save_config(config, workdir)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    with distribute.strategy_scope(strategy):
        try:
            data = Data(config, strategy, _DATA_DIR.value, _MANUAL_DIR.value)
        except ValueError as error:  # a wrong split or size, or data that is not there
            print(error, file=sys.stderr)
            sys.exit(EXIT_INVALID_CONFIG)
        model = make_model(config, data.channels, strategy)
        model.compile(
            optimizer=make_optimizer(config),
            jit_compile="auto" if config.jit_compile is None else config.jit_compile,
        )
        start_step = restore_checkpoint(model, config, workdir)
        fit(model, config, workdir, data, start_step)
    export(model, config, workdir, data)


if __name__ == "__main__":
    app.run(main)
