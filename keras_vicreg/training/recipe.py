"""The pretraining recipe: a config in; the data, model, optimizer, callbacks and export out.

What the binaries (`trainers/pretrain.py`, `trainers/demo.py`) call, in the order they call it:

    set_threads(config)                   before TensorFlow's first op
    pretraining.validate(config, replicas)
    save_config(config, workdir)
    data = Data(config, strategy, data_dir, manual_dir, workdir)   raises UndecodableImagesError
    model = make_model(config, data.channels, data.num_classes); compile_model(model, config)
    start_step = restore_checkpoint(model, config, workdir)
    fit(model, config, workdir, data, start_step)     raises TrainingDiverged
    export(model, config, workdir, data)

Nothing here reads flags or exits: an invalid config or missing data is a `ValueError`, a diverged
run a `TrainingDiverged`, and the binary maps them to `keras_vicreg.training.exit_codes`.
"""

import contextlib
import os

import keras
from tensorflow.io import gfile

from keras_vicreg import export as vicreg_export
from keras_vicreg.config import common
from keras_vicreg.config import model_options
from keras_vicreg.config import pretraining
from keras_vicreg.experimental import cpu as cpu_kernels
from keras_vicreg.models import backbones
from keras_vicreg.models import PhotometricAugmentation
from keras_vicreg.models import VICReg
from keras_vicreg.training import callbacks as vicreg_callbacks
from keras_vicreg.training import checkpointing
from keras_vicreg.training import multihost
from keras_vicreg.training import online_eval
from keras_vicreg.training import summaries
from keras_vicreg.training.optimizers import AdamW
from keras_vicreg.training.optimizers import LARS
from keras_vicreg.training.pretraining_data import Data  # noqa: F401  (part of the recipe's API)
from keras_vicreg.training.pretraining_data import config_augmentation
from keras_vicreg.training.pretraining_data import epoch_seed  # noqa: F401
from keras_vicreg.training.run_config import save_config  # noqa: F401
from keras_vicreg.training.run_config import keep_what_the_checkpoints_hold  # noqa: F401
from keras_vicreg.training.schedules import WarmupCosine


class TrainingDiverged(vicreg_callbacks.NonFiniteTrainingError):
    """A run stopped at a non-finite loss or weight; its message says which checkpoint is kept.

    Attributes:
        step: the training step that produced the non-finite value.
        checkpoint: (step, path) of the newest checkpoint, written before that step, or None.
    """

    def __init__(self, message, step=None, checkpoint=None):
        super().__init__(message, step=step)
        self.checkpoint = checkpoint


def make_model(config, channels, num_classes=None):
    """The VICReg model of `config.model`, on images of `config.image_size` and `channels`.

    With `config.online_eval.probe`, an `OnlineProbe` of `num_classes` classes trains beside it
    (`online_eval.make_probe`); build it in the strategy's scope as the rest.

    Build it inside the strategy's scope: with `config.model.sync_batch_norm` every
    BatchNormalization is synchronised when that strategy has several replicas or processes.

    With `config.model.experimental_cpu_kernels` the backbone computes with
    `keras_vicreg.experimental.cpu`'s layers; `export` puts the stock layers back before saving.
    """
    options = config.model
    input_shape = (config.image_size, config.image_size, channels)

    def make_backbone(name, suffix=""):  # branch b's gets a name of its own
        return backbones.build(
            name,
            input_shape,
            source=options.source,
            stem=options.stem,
            filters=tuple(options.filters),
            zero_init_residual=options.zero_init_residual,
            vit_pooling=options.vit_pooling,
            model_name=f"{name}{suffix}" if suffix else None,
        )

    backbone = make_backbone(options.backbone)
    backbone_b = None
    if options.branch_b != "shared":  # the flexibility table's DW and DA
        backbone_b = make_backbone(
            options.backbone if options.branch_b == "own_weights" else options.backbone_b, "_b"
        )
    for model in (backbone, backbone_b):
        if options.experimental_cpu_kernels and model is not None:
            cpu_kernels.use_cpu_kernels(model)
    return VICReg(
        backbone,
        options.expander,
        backbone_b=backbone_b,
        sim_coeff=options.sim_coeff,
        std_coeff=options.std_coeff,
        cov_coeff=options.cov_coeff,
        covariance=options.covariance,
        # None: synchronised under a strategy of several replicas or processes (models.batch_norm)
        sync_batch_norm=None if options.sync_batch_norm else False,
        online_probe=online_eval.make_probe(config, num_classes),
        photometric=make_photometric(config),
        **model_options.model_kwargs(options, config.total_steps),
    )


def make_photometric(config):
    """The `PhotometricAugmentation` of `config.photometric_device="accelerator"`, else None.

    Seeded with `config.seed`: its draws are a function of the seed and the step, saved in the
    checkpoints with the weights.
    """
    if config.get("photometric_device", "host") != "accelerator":
        return None
    return PhotometricAugmentation(config_augmentation(config), seed=config.seed)


def make_optimizer(config):
    """`config.optimizer.name`'s optimizer ("lars" or "adamw") with the warmup-cosine schedule.

    Both exclude the variables whose path matches `config.optimizer.exclude_from_decay` from the
    weight decay (and LARS from its trust ratio); "auto" is the paper's base rate for the batch.
    """
    options = config.optimizer
    schedule = WarmupCosine(
        common.base_learning_rate(config),
        total_steps=config.total_steps,
        warmup_steps=options.warmup_steps,
        batch_size=config.batch_size,
        end_factor=options.end_factor,
    )
    exclude = list(options.exclude_from_decay)
    if options.name == "adamw":
        return AdamW(
            schedule, weight_decay=options.weight_decay, beta_1=options.beta_1,
            beta_2=options.beta_2, epsilon=options.epsilon, exclude_from_decay=exclude,
        )
    return LARS(
        schedule, momentum=options.momentum, weight_decay=options.weight_decay, eta=options.eta,
        clip_trust_ratio=options.clip_trust_ratio, exclude_from_adaptation=exclude,
    )


def compile_model(model, config):
    """Compiles `model` with `make_optimizer(config)` and `config.jit_compile` (None: "auto")."""
    jit_compile = "auto" if config.jit_compile is None else config.jit_compile
    model.compile(optimizer=make_optimizer(config), jit_compile=jit_compile)
    return model


def restore_checkpoint(model, config, workdir):
    """Restores the newest checkpoint of `workdir`, if any; returns the step to start from."""
    directory = os.path.join(workdir, "checkpoints")
    step = checkpointing.restore_latest(model, directory)
    multihost.broadcast_weights(model)  # PyTorch: every process starts from process 0's weights
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


def make_callbacks(config, workdir, data, start_step, stop_signal=None, watchdog=None):
    """NaN guard first, checkpoint last: a non-finite step never reaches the checkpoint.

    `stop_signal` (a `preemption.PreemptionSignal`) makes the checkpoint callback save the step
    and raise `preemption.Preempted` once a SIGTERM or SIGINT has arrived. In a job of several
    processes only process 0 prints progress and writes summaries and checkpoints, and
    `watchdog` (a `watchdog.StallWatchdog`) counts the steps. With the online probe, the held-out
    evaluation (`online_eval.make_callback`) comes before the printer and the summaries, which
    then show its `knn_top1` and `probe_top1`.
    """
    view = data.augmentation.view_a
    write = multihost.is_writer()
    printer = summaries.ProgressPrinter(
        config.log_every_steps, config.total_steps, config.steps_per_epoch, start_step
    )
    evaluation = online_eval.make_callback(config, workdir, data, start_step)
    return [
        *([watchdog] if watchdog is not None else []),
        *([evaluation] if evaluation is not None else []),
        vicreg_callbacks.LearningRateLogger(),
        vicreg_callbacks.NaNGuard(check_weights=config.nan_check_weights),
        vicreg_callbacks.CollapseMonitor(
            threshold=config.collapse_threshold, patience=config.collapse_patience_steps
        ),
        *([printer] if write else []),
        summaries.TensorBoardSummaries(
            os.path.join(workdir, "tensorboard"),
            fixed_views=data.fixed_views(),
            mean=view.mean,
            std=view.std,
            scalar_every_steps=config.log_every_steps,
            embedding_every_steps=config.summary_every_steps,
            image_pairs=config.summary_image_pairs,
            initial_step=start_step,
            write=write,
        ),
        checkpointing.StepCheckpoint(
            os.path.join(workdir, "checkpoints"),
            config.checkpoint_every_steps,
            initial_step=start_step,
            keep=config.keep_checkpoints,
            stop_signal=stop_signal,
            write=write,
        ),
    ]


def fit(model, config, workdir, data, start_step, verbose=0, stop_signal=None, watchdog=None):
    """Trains from `start_step` to `config.total_steps`, checkpointing into `workdir`.

    Args:
        model: a compiled model (`compile_model`), restored to `start_step`.
        verbose: Keras' progress output (0: only `summaries.ProgressPrinter`'s lines).
        stop_signal, watchdog: see `make_callbacks`.

    Raises:
        TrainingDiverged: the loss or a weight became NaN or infinite; the message names the step
            and the newest checkpoint, written before it, which a rerun resumes from.
        preemption.Preempted: `stop_signal` received a signal; the step is checkpointed.
        checkpointing.ShortEpochError: an epoch's data ran out before its steps.
    """
    try:
        checkpointing.resumable_fit(
            model,
            data.epoch,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            initial_step=start_step,
            callbacks=make_callbacks(config, workdir, data, start_step, stop_signal, watchdog),
            verbose=verbose,
        )
    except vicreg_callbacks.NonFiniteTrainingError as error:
        directory = os.path.join(workdir, "checkpoints")
        # With the weights unchecked (nan_check_weights=False) a checkpoint may hold NaN already:
        # name the newest that does not, read from the files.
        latest = (checkpointing.latest_checkpoint(directory) if config.nan_check_weights
                  else checkpointing.newest_finite_checkpoint(directory))
        kept = (
            "No checkpoint was written before it."
            if latest is None
            else f"The newest checkpoint with finite values, step {latest[0]} ({latest[1]}), is "
            "kept: fix the cause (e.g. a lower --config.optimizer.base_learning_rate) and run the "
            "command again to resume from it."
        )
        raise TrainingDiverged(
            f"Training diverged at step {error.step}.\n{error}\n{kept}", step=error.step,
            checkpoint=latest,
        ) from error


EXPORT_WAIT_S = 3600.0  # how long the other processes wait for process 0's export


def export(model, config, workdir, data, watchdog=None):
    """Writes the backbone to `workdir/export/`: `backbone.keras` at the pretraining size and,
    from TensorFlow or JAX, the SavedModel `saved_model/`.

    The SavedModel's `serve` reads images as the evaluation does: a centre crop of
    `config.eval_crop_fraction` resized to `pretraining.eval_image_size(config)` pixels. In a job
    of several processes process 0 exports and the others wait for it (up to `EXPORT_WAIT_S`
    with a `watchdog.StallWatchdog`), so that none leaves the job while it writes.

    Returns:
        {"backbone.keras": path, "saved_model": path or None (the torch backend)}; None on the
        processes other than 0.
    """
    if multihost.process_count() == 1:
        return _export(model, config, workdir, data)
    with watchdog.allow(EXPORT_WAIT_S) if watchdog else contextlib.nullcontext():
        return multihost.on_writer(_export, model, config, workdir, data)


def _export(model, config, workdir, data):
    directory = os.path.join(workdir, "export")
    gfile.makedirs(directory)
    # Stock Keras layers in the files, so that they load without keras_vicreg.
    cpu_kernels.use_stock_layers(model.backbone)
    keras_path = os.path.join(directory, "backbone.keras")
    with multihost.local_scope():
        model.backbone.save(keras_path)
    print(f"Saved the backbone to {keras_path}", flush=True)
    if keras.backend.backend() == "torch":
        print(
            "No SavedModel from the torch backend (Keras needs torch_xla): export backbone.keras "
            "with KERAS_BACKEND=tensorflow or jax and keras_vicreg.export.export_backbone.",
            flush=True,
        )
        return {"backbone.keras": keras_path, "saved_model": None}
    view = data.augmentation.view_a
    path = os.path.join(directory, "saved_model")
    size = pretraining.eval_image_size(config)
    with multihost.local_scope():
        backbone = model.backbone
        if keras.backend.backend() == "jax" and multihost.process_count() > 1:
            # A copy of this process's own: tracing the distributed backbone is a collective.
            backbone = keras.saving.load_model(keras_path)
        vicreg_export.export_backbone(
            backbone, path, image_size=size, mean=view.mean, std=view.std,
            resize_ratio=1.0 / config.eval_crop_fraction, pretraining_image_size=config.image_size,
            config=config,
        )
    print(f"Exported the backbone as a SavedModel to {path} (serve reads {size} px)", flush=True)
    return {"backbone.keras": keras_path, "saved_model": path}


def set_threads(config):
    """Applies `config.tf_intra_op_threads`; call it before TensorFlow runs its first op.

    One thread per op lets two ops (the two views' branches) run side by side on a small CPU;
    `benchmarks/train_step.py --intra_op_threads N` measures what it gains on a machine.
    """
    threads = config.tf_intra_op_threads
    if threads is not None and threads >= 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
