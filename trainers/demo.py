r"""VICReg on Fashion-MNIST on a laptop CPU, end to end: pretrain, export, evaluate, compare, plot.

    bash scripts/demo.sh                        # setup.sh, then the command below
    python -m trainers.demo --workdir=/tmp/vicreg_demo
    python -m trainers.demo --workdir=/tmp/vicreg_tiny \
        --config=configs/fashion_mnist_demo.py:runlocal --config.epochs=1 \
        --eval_config=configs/fashion_mnist_demo_eval.py:runlocal

Prepares Fashion-MNIST offline, pretrains VICReg on the 60,000 training images without their
labels (`trainers.pretrain`'s data, model, optimizer and callbacks), exports the backbone, and
scores the exported SavedModel's features of the 10,000 test images with a linear classifier and
kNN, against the same protocol on raw pixels and on the same backbone with random weights.

The linear protocol (`configs/fashion_mnist_demo_eval.py`), the same for the three rows: features
standardised with the training set's mean and std, one linear layer trained with SGD and a cosine
schedule; no choice is made on the test set. kNN: cosine similarity, k = 200, temperature 0.07.

Writes to --workdir: `results.json`, `results.md` (the table it prints), `config.json`,
`export/` (`backbone.keras` and the SavedModel `saved_model/`), `checkpoints/`, `tensorboard/`,
and the plots `loss_terms.png`, `embedding_std.png` and `pca_test.png`.
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg import checkpointing
from keras_vicreg import plots
from keras_vicreg import pretrain_config
from keras_vicreg.data import labelled_dataset
from keras_vicreg.data import prepare_fashion_mnist
from keras_vicreg.evaluation.knn import knn_accuracy
from keras_vicreg.evaluation.linear import extract_features
from keras_vicreg.evaluation.linear import linear_evaluation_on_features
from trainers import pretrain

# The flags are `trainers.pretrain`'s (--config, --workdir, --data_dir), with the demo's defaults.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "fashion_mnist_demo.py")
flags.set_default(pretrain._CONFIG, DEFAULT_CONFIG)
flags.set_default(pretrain._WORKDIR, "/tmp/vicreg_demo")
_EVAL_CONFIG = config_flags.DEFINE_config_file(
    "eval_config", os.path.join(os.path.dirname(DEFAULT_CONFIG), "fashion_mnist_demo_eval.py"),
    "The evaluation's config file.",
)
ROWS = ("VICReg (pretrained, exported)", "same backbone, random weights", "raw pixels")


def pretrain_and_export(config, workdir, data):
    """Pretrains (or resumes) as `trainers.pretrain` does, and exports; returns (model, the step
    it started from)."""
    model = pretrain.make_model(config, data.channels, strategy=None)
    jit_compile = "auto" if config.jit_compile is None else config.jit_compile
    model.compile(optimizer=pretrain.make_optimizer(config), jit_compile=jit_compile)
    start_step = pretrain.restore_checkpoint(model, config, workdir)
    checkpointing.resumable_fit(
        model, data.epoch, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
        initial_step=start_step,
        callbacks=pretrain.make_callbacks(config, workdir, data, start_step),
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar, or a line per epoch
    )
    pretrain.export(model, config, workdir, data)
    return model, start_step


def evaluation_images(evaluation, augmentation, data_dir):
    """(train, test) pairs (images, labels) of whole images, preprocessed as for pretraining.

    Preprocessed once and kept in memory (220 MB for Fashion-MNIST), as all three rows embed them.
    """
    splits = []
    for split in (evaluation.train_split, evaluation.test_split):
        batches = labelled_dataset(
            "fashion_mnist", evaluation.batch_size, train=False, split=split,
            augmentation=augmentation, crop_fraction=1.0, data_dir=data_dir,
        )
        images, labels = zip(*((images.numpy(), labels.numpy()) for images, labels in batches))
        splits.append((np.concatenate(images), np.concatenate(labels)))
    return tuple(splits)


def features(features_fn, images, evaluation):
    """(train, test) pairs (features, labels) of `evaluation_images`' images."""
    return tuple(
        extract_features(features_fn, tf.data.Dataset.from_tensor_slices(split).batch(
            evaluation.batch_size))
        for split in images
    )


def score(train, test, evaluation):
    """Linear top-1 on standardised features and kNN top-1, as fractions."""
    mean, std = train[0].mean(axis=0), train[0].std(axis=0) + 1e-6
    linear = linear_evaluation_on_features(
        ((train[0] - mean) / std, train[1]), ((test[0] - mean) / std, test[1]),
        num_classes=10, **evaluation.linear,
    )
    knn = knn_accuracy(train[0], train[1], test[0], test[1], num_classes=10, **evaluation.knn)
    return {"linear_top1": linear["best"]["top1"] / 100.0, "knn_top1": knn["top1"] / 100.0,
            "feature_width": int(train[0].shape[1])}


def table(rows):
    """The markdown table of the results, accuracies in percent."""
    lines = ["| features | width | linear top-1 | kNN top-1 |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {row['feature_width']} | {100 * row['linear_top1']:.2f} | "
              f"{100 * row['knn_top1']:.2f} |" for name, row in rows.items()]
    return "\n".join(lines)


def write_plots(workdir, model, random_model, vicreg_test, random_test):
    """The loss terms, the embeddings' per-dimension std, the PCA of the test representations."""
    steps, terms = plots.read_scalars(os.path.join(workdir, "tensorboard"))
    plots.plot_loss_terms(steps, terms, os.path.join(workdir, "loss_terms.png"))
    embeddings = keras.ops.convert_to_numpy(model.expander(vicreg_test[0], training=False))
    reference = keras.ops.convert_to_numpy(random_model.expander(random_test[0], training=False))
    plots.plot_std_histogram(embeddings, os.path.join(workdir, "embedding_std.png"),
                             reference=reference, gamma=1.0)
    plots.plot_embedding_2d(vicreg_test[0], vicreg_test[1], os.path.join(workdir, "pca_test.png"),
                            title="PCA of the VICReg representations of the test images")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.time()
    config, evaluation = pretrain._CONFIG.value, _EVAL_CONFIG.value
    workdir = pretrain._WORKDIR.value
    pretrain.set_threads(config)
    pretrain_config.validate(config)
    pretrain.save_config(config, workdir)
    prepare_fashion_mnist(pretrain._DATA_DIR.value)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    data = pretrain.Data(config, strategy=None, data_dir=pretrain._DATA_DIR.value)
    random_model = pretrain.make_model(config, data.channels, strategy=None)

    pretrain_start, pretrain_cpu_start = time.time(), time.process_time()
    model, start_step = pretrain_and_export(config, workdir, data)
    pretrain_seconds = time.time() - pretrain_start
    pretrain_cpu_seconds = time.process_time() - pretrain_cpu_start

    print("Evaluating on the test set: features, linear classifiers, kNN", flush=True)
    exported = tf.saved_model.load(os.path.join(workdir, "export", "saved_model"))
    images = evaluation_images(evaluation, data.augmentation, pretrain._DATA_DIR.value)
    vicreg = features(exported.serve_features, images, evaluation)
    random = features(random_model, images, evaluation)
    pixels = features(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), images, evaluation)
    rows = {name: score(*pair, evaluation) for name, pair in zip(ROWS, (vicreg, random, pixels))}
    write_plots(workdir, model, random_model, vicreg[1], random[1])

    total_seconds, total_cpu_seconds = time.time() - start, time.process_time()
    markdown = table(rows) + (
        f"\n\nWall time: pretraining {pretrain_seconds / 60:.1f} min, total "
        f"{total_seconds / 60:.1f} min; CPU time (all threads): pretraining "
        f"{pretrain_cpu_seconds / 60:.1f} min, total {total_cpu_seconds / 60:.1f} min "
        f"({keras.backend.backend()} backend, {os.cpu_count()} CPU cores)."
    )
    if start_step:
        markdown += (f" This run resumed at step {start_step} of {config.total_steps}: its times "
                     "leave out the steps before.")
    print(markdown, flush=True)
    with open(os.path.join(workdir, "results.md"), "w") as file:
        file.write(markdown + "\n")
    results = {"rows": rows, "pretrain_seconds": pretrain_seconds, "start_step": start_step,
               "pretrain_cpu_seconds": pretrain_cpu_seconds, "total_seconds": total_seconds,
               "total_cpu_seconds": total_cpu_seconds, "backend": keras.backend.backend(),
               "evaluation": evaluation.to_dict()}
    with open(os.path.join(workdir, "results.json"), "w") as file:
        json.dump(results, file, indent=2)


if __name__ == "__main__":
    app.run(main)
