r"""VICReg on Fashion-MNIST on a laptop CPU, end to end: pretrain, export, evaluate, compare, plot.

    bash scripts/demo.sh                        # setup.sh, then the command below
    python -m trainers.demo --workdir=/tmp/vicreg_demo
    python -m trainers.demo --workdir=/tmp/vicreg_tiny \
        --config=configs/fashion_mnist_demo.py:runlocal --config.epochs=1 \
        --eval_config=configs/fashion_mnist_demo_eval.py:runlocal

Prepares Fashion-MNIST offline, pretrains VICReg on the 60,000 training images without their
labels (`trainers.pretrain`'s data, model, optimizer and callbacks), exports the backbone, and
scores the exported backbone's features of the 10,000 test images with a linear classifier and
kNN, against the same protocol on raw pixels and on the same backbone with random weights.

The linear protocol (`configs/fashion_mnist_demo_eval.py`), the same for every row: features of
whole images standardised with the training set's mean and std, one linear layer trained with SGD
and a cosine schedule; no choice is made on the test set. kNN: cosine similarity, k = 200,
temperature 0.07. The backbones read the images enlarged to `eval_config.image_size` (44 pixels,
FixRes: see the config), and the SavedModel's features at the pretraining size (28) are a row too.

Writes to --workdir: `results.json`, `results.md` (the table it prints), `config.json`,
`export/` (`backbone.keras` and the SavedModel `saved_model/`), `checkpoints/`, `tensorboard/`,
and the plots `loss_terms.png`, `embedding_std.png` and `pca_test.png`.
"""

import copy
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.data import transforms
from keras_vicreg.training import checkpointing
from keras_vicreg import plots
from keras_vicreg.config import pretraining
from keras_vicreg.data import labelled_dataset
from keras_vicreg.data import load_builder
from keras_vicreg.data import prepare_fashion_mnist
from keras_vicreg.evaluation.knn import knn_scores
from keras_vicreg.evaluation.knn import topk_accuracy
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
# The SavedModel's row when the backbones are evaluated at another size than they trained at.
AT_PRETRAINING_SIZE = "VICReg, at the pretraining size"


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


def decoded_splits(evaluation, data_dir):
    """The evaluation's (train, test) splits of Fashion-MNIST decoded: (uint8 images, labels)."""
    import tensorflow_datasets as tfds

    builder = load_builder("fashion_mnist", data_dir=data_dir)
    return tuple(
        (decoded["image"], decoded["label"])
        for decoded in (tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
                        for split in (evaluation.train_split, evaluation.test_split))
    )


def evaluation_images(decoded, augmentation, evaluation):
    """(train, test) pairs (images, labels) of whole images, preprocessed as for pretraining.

    Preprocessed a batch at a time (`labelled_dataset` of arrays) and kept in memory (220 MB for
    Fashion-MNIST at 28 pixels), as several rows embed them.
    """
    splits = []
    for split in decoded:
        batches = labelled_dataset(split, evaluation.batch_size, train=False,
                                   augmentation=augmentation, crop_fraction=1.0)
        images, labels = zip(*((images.numpy(), labels.numpy()) for images, labels in batches))
        splits.append((np.concatenate(images), np.concatenate(labels)))
    return tuple(splits)


def on_halves(fn, *arrays):
    """`fn` on the first and on the second half of `arrays` at once, in two threads; the list of
    its two results.

    The demo runs TensorFlow with one thread per op (`config.tf_intra_op_threads`), which suits
    training's two views but leaves one core idle in a single stream of ops: two streams use both
    (embedding and kNN about 1.8x and 2x faster on the 2-core Xeon).
    """
    half = (len(arrays[0]) + 1) // 2
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda part: fn(*(array[part] for array in arrays)),
                             (slice(0, half), slice(half, None))))


def features(features_fn, images, evaluation):
    """(train, test) pairs (features, labels) of `evaluation_images`' images."""

    def extract(split_images, split_labels):
        return extract_features(features_fn, tf.data.Dataset.from_tensor_slices(
            (split_images, split_labels)).batch(evaluation.batch_size))

    extract(images[0][0][:1], images[0][1][:1])  # builds a Keras model's function before threads
    pairs = []
    for split in images:
        halves = on_halves(extract, *split)
        pairs.append(tuple(np.concatenate(parts) for parts in zip(*halves)))
    return tuple(pairs)


def score(train, test, evaluation):
    """Linear top-1 on standardised features and kNN top-1, as fractions."""
    mean, std = train[0].mean(axis=0), train[0].std(axis=0) + 1e-6
    linear = linear_evaluation_on_features(
        ((train[0] - mean) / std, train[1]), ((test[0] - mean) / std, test[1]),
        num_classes=10, **evaluation.linear,
    )
    votes = on_halves(lambda queries: knn_scores(train[0], train[1], queries, num_classes=10,
                                                 **evaluation.knn), test[0])
    knn = topk_accuracy(np.concatenate(votes), test[1])
    return {"linear_top1": linear["best"]["top1"] / 100.0, "knn_top1": knn["top1"] / 100.0,
            "feature_width": int(train[0].shape[1])}


def table(rows):
    """The markdown table of the results, accuracies in percent."""
    lines = ["| features | input | width | linear top-1 | kNN top-1 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {row['image_size']} px | {row['feature_width']} | "
              f"{100 * row['linear_top1']:.2f} | {100 * row['knn_top1']:.2f} |"
              for name, row in rows.items()]
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


def resized_backbone(backbone, config, channels, image_size):
    """`backbone` (its architecture and weights) on images of `image_size`.

    `make_model` fixes the input size, as training runs faster on a known shape; the convolutions
    and the global pooling do not depend on it, so the same weights take any size.
    """
    if image_size == config.image_size:
        return backbone
    sized = copy.deepcopy(config)
    sized.image_size = image_size
    resized = pretrain.make_model(sized, channels, strategy=None).backbone
    resized.set_weights(backbone.get_weights())
    return resized


def evaluate(config, evaluation, workdir, data, random_model):
    """{row name: scores} of the table, and the (VICReg, random weights) test features for the
    plots.

    Whole images at the pretraining size for raw pixels and the SavedModel; with another
    `evaluation.image_size` (44 for the demo: objects look as large as in the training crops,
    FixRes) the two backbone rows are read at that size, and the SavedModel's row is kept.
    """
    size = config.image_size
    eval_size = size if evaluation.get("image_size") is None else evaluation.image_size
    decoded = decoded_splits(evaluation, pretrain._DATA_DIR.value)
    native = evaluation_images(decoded, data.augmentation, evaluation)
    exported = tf.saved_model.load(os.path.join(workdir, "export", "saved_model"))
    vicreg = features(exported.serve_features, native, evaluation)
    rows = {}
    if eval_size != size:
        images = evaluation_images(
            decoded, transforms.get_augmentation(data.augmentation, eval_size), evaluation
        )
        backbone = keras.saving.load_model(os.path.join(workdir, "export", "backbone.keras"))
        vicreg_native, vicreg = vicreg, features(
            resized_backbone(backbone, config, data.channels, eval_size), images, evaluation
        )
        rows[ROWS[0]] = {**score(*vicreg, evaluation), "image_size": eval_size}
        rows[AT_PRETRAINING_SIZE] = {**score(*vicreg_native, evaluation), "image_size": size}
    else:
        images = native
        rows[ROWS[0]] = {**score(*vicreg, evaluation), "image_size": size}
    random = features(resized_backbone(random_model.backbone, config, data.channels, eval_size),
                      images, evaluation)
    rows[ROWS[1]] = {**score(*random, evaluation), "image_size": eval_size}
    pixels = features(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), native, evaluation)
    rows[ROWS[2]] = {**score(*pixels, evaluation), "image_size": size}
    return rows, vicreg[1], random[1]


def check_evaluation(evaluation):
    """Raises before pretraining if the evaluation config cannot run."""
    size = evaluation.get("image_size")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(
            "eval_config.image_size must be a positive number of pixels (or None: the pretraining "
            f"size). Received: eval_config.image_size={size!r}"
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.time()
    config, evaluation = pretrain._CONFIG.value, _EVAL_CONFIG.value
    workdir = pretrain._WORKDIR.value
    pretrain.set_threads(config)
    pretraining.validate(config)
    check_evaluation(evaluation)
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
    rows, vicreg_test, random_test = evaluate(config, evaluation, workdir, data, random_model)
    write_plots(workdir, model, random_model, vicreg_test, random_test)

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
