"""A pretrained backbone against random weights and raw pixels, under one linear + kNN protocol.

What `trainers/demo.py` reports: the features of whole labelled images (train and test splits),
scored by one linear classifier on standardised features (`linear_evaluation_on_features`) and by
kNN (`knn_scores`), for each row of a table:

    VICReg, exported SavedModel (serve)     the shipped SavedModel's `serve` on the raw uint8
                                            images, at the size it records (`eval_image_size`)
    VICReg, backbone.keras at the
    pretraining size                        when that size differs: the saved backbone at the size
                                            it trained at
    same backbone, random weights           the architecture untrained, at `eval_image_size`
    raw pixels                              the normalised images at the pretraining size, flattened

Nothing is chosen on the test set. The first row is computed by the file a user downloads, so the
table's figure is what that file scores.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from keras_vicreg import plots
from keras_vicreg.data import labelled_dataset
from keras_vicreg.data import load_builder
from keras_vicreg.data import transforms
from keras_vicreg.evaluation.knn import knn_scores
from keras_vicreg.evaluation.knn import topk_accuracy
from keras_vicreg.evaluation.linear import extract_features
from keras_vicreg.evaluation.linear import linear_evaluation_on_features
from keras_vicreg.models.backbones.resizing import at_image_size
from keras_vicreg.training import durable_files

EXPORTED = "VICReg, exported SavedModel (serve)"
AT_PRETRAINING_SIZE = "VICReg, backbone.keras at the pretraining size"
RANDOM = "same backbone, random weights"
PIXELS = "raw pixels"
PLOTS = ("loss_terms.png", "embedding_std.png", "pca_test.png")


def check_evaluation(evaluation):
    """Raises a ValueError before pretraining if the evaluation config cannot run."""
    if "image_size" in evaluation:
        raise ValueError(
            "The evaluation's image size is the pretraining config's eval_image_size (the export "
            "reads it too): set --config.eval_image_size instead. "
            f"Received: eval_config.image_size={evaluation.image_size!r}"
        )
    for key in ("train_split", "test_split", "batch_size", "linear", "knn"):
        if key not in evaluation:
            raise ValueError(f"The evaluation config lacks {key!r}. "
                             f"Received: keys {sorted(evaluation.keys())}")
    if not isinstance(evaluation.batch_size, int) or evaluation.batch_size < 1:
        raise ValueError(
            "eval_config.batch_size must be a positive integer. "
            f"Received: eval_config.batch_size={evaluation.batch_size!r}"
        )


def decoded_splits(evaluation, data_dir=None, dataset="fashion_mnist"):
    """The evaluation's (train, test) splits decoded: pairs (uint8 images, labels)."""
    import tensorflow_datasets as tfds

    builder = load_builder(dataset, data_dir=data_dir)
    return tuple(
        (decoded["image"], decoded["label"])
        for decoded in (tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
                        for split in (evaluation.train_split, evaluation.test_split))
    )


def evaluation_images(decoded, augmentation, evaluation, crop_fraction=1.0):
    """(train, test) pairs (images, labels), preprocessed as `labelled_dataset` does for
    evaluation: a centre crop of `crop_fraction`, resized to the augmentation's size, normalised.

    Preprocessed a batch at a time and kept in memory (220 MB for Fashion-MNIST at 28 pixels), as
    several rows embed them.
    """
    splits = []
    for split in decoded:
        batches = labelled_dataset(split, evaluation.batch_size, train=False,
                                   augmentation=augmentation, crop_fraction=crop_fraction)
        images, labels = zip(*((images.numpy(), labels.numpy()) for images, labels in batches))
        splits.append((np.concatenate(images), np.concatenate(labels)))
    return tuple(splits)


def on_halves(fn, *arrays):
    """`fn` on the first and on the second half of `arrays` at once, in two threads; the list of
    its two results.

    A run with one TensorFlow thread per op (`config.tf_intra_op_threads = 1`, which suits
    training's two views) leaves cores idle in a single stream of ops; two streams use them.
    """
    half = (len(arrays[0]) + 1) // 2
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda part: fn(*(array[part] for array in arrays)),
                             (slice(0, half), slice(half, None))))


def features(features_fn, images, evaluation):
    """(train, test) pairs (features, labels) of `features_fn` on (train, test) pairs (images,
    labels), each split embedded in two threads (`on_halves`)."""
    import tensorflow as tf

    def extract(split_images, split_labels):
        return extract_features(features_fn, tf.data.Dataset.from_tensor_slices(
            (split_images, split_labels)).batch(evaluation.batch_size))

    extract(images[0][0][:1], images[0][1][:1])  # builds a Keras model's function before threads
    pairs = []
    for split in images:
        halves = on_halves(extract, *split)
        pairs.append(tuple(np.concatenate(parts) for parts in zip(*halves)))
    return tuple(pairs)


def score(train, test, evaluation, num_classes=10):
    """Linear top-1 on standardised features and kNN top-1, as fractions, and the width."""
    mean, std = train[0].mean(axis=0), train[0].std(axis=0) + 1e-6
    linear = linear_evaluation_on_features(
        ((train[0] - mean) / std, train[1]), ((test[0] - mean) / std, test[1]),
        num_classes=num_classes, **evaluation.linear,
    )
    votes = on_halves(lambda queries: knn_scores(train[0], train[1], queries,
                                                 num_classes=num_classes, **evaluation.knn),
                      test[0])
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


def evaluate(export_dir, random_backbone, augmentation, evaluation, *, eval_image_size,
             crop_fraction=1.0, data_dir=None):
    """{row name: scores and image size} of the table, and the (exported, random weights) test
    features (features, labels) for the plots.

    Args:
        export_dir: what `keras_vicreg.training.recipe.export` wrote: `saved_model/`, whose `serve`
            reads `eval_image_size` pixels, and `backbone.keras`, at the pretraining size.
        random_backbone: the same architecture with its initial weights.
        augmentation: the pretraining `transforms.TwoViewAugmentation` (its view a gives the
            pretraining size, channels and normalisation).
        evaluation: the evaluation config (`configs/fashion_mnist_demo_eval.py`).
        eval_image_size: the size the backbones read (`pretraining.eval_image_size(config)`).
        crop_fraction: the centre crop of every row's images (`config.eval_crop_fraction`).
        data_dir: tensorflow-datasets' directory.
    """
    import tensorflow as tf

    size = augmentation.view_a.image_size
    decoded = decoded_splits(evaluation, data_dir)
    native = evaluation_images(decoded, augmentation, evaluation, crop_fraction)
    images = native
    if eval_image_size != size:
        images = evaluation_images(decoded, transforms.get_augmentation(augmentation,
                                                                        eval_image_size),
                                   evaluation, crop_fraction)
    exported = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    vicreg = features(exported.serve, decoded, evaluation)
    rows = {EXPORTED: {**score(*vicreg, evaluation), "image_size": eval_image_size}}
    if eval_image_size != size:
        backbone = keras.saving.load_model(os.path.join(export_dir, "backbone.keras"))
        rows[AT_PRETRAINING_SIZE] = {**score(*features(backbone, native, evaluation), evaluation),
                                     "image_size": size}
    random = features(at_image_size(random_backbone, eval_image_size), images, evaluation)
    rows[RANDOM] = {**score(*random, evaluation), "image_size": eval_image_size}
    pixels = features(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), native, evaluation)
    rows[PIXELS] = {**score(*pixels, evaluation), "image_size": size}
    return rows, vicreg[1], random[1]


def write_plots(workdir, model, random_model, vicreg_test, random_test):
    """The loss terms, the embeddings' per-dimension std, the PCA of the test representations;
    returns the paths of `PLOTS` in `workdir`."""
    paths = [os.path.join(workdir, name) for name in PLOTS]
    steps, terms = plots.read_scalars(os.path.join(workdir, "tensorboard"))
    plots.plot_loss_terms(steps, terms, paths[0])
    embeddings = keras.ops.convert_to_numpy(model.expander(vicreg_test[0], training=False))
    reference = keras.ops.convert_to_numpy(random_model.expander(random_test[0], training=False))
    plots.plot_std_histogram(embeddings, paths[1], reference=reference, gamma=1.0)
    plots.plot_embedding_2d(vicreg_test[0], vicreg_test[1], paths[2],
                            title="PCA of the VICReg representations of the test images")
    return paths


def write_report(workdir, rows, timings, *, start_step, total_steps, details):
    """Writes the table with its times to `results.md` and everything to `results.json`.

    Args:
        workdir: the run's directory.
        rows: `evaluate`'s rows.
        timings: seconds, {"pretrain", "pretrain_cpu", "total", "total_cpu"}.
        start_step: the step pretraining started from (0, or where it resumed).
        total_steps: the run's steps.
        details: more entries for results.json (the backend, the evaluation config, ...).

    Returns:
        (the markdown printed, the path of results.md, the path of results.json).
    """
    markdown = table(rows) + (
        f"\n\nWall time: pretraining {timings['pretrain'] / 60:.1f} min, total "
        f"{timings['total'] / 60:.1f} min; CPU time (all threads): pretraining "
        f"{timings['pretrain_cpu'] / 60:.1f} min, total {timings['total_cpu'] / 60:.1f} min "
        f"({details.get('backend')} backend, {os.cpu_count()} CPU cores)."
    )
    if start_step:
        markdown += (f" This run resumed at step {start_step} of {total_steps}: its times leave "
                     "out the steps before.")
    results_md = os.path.join(workdir, "results.md")
    with open(results_md, "w") as file:
        file.write(markdown + "\n")
    results = {"rows": rows, "start_step": start_step,
               **{f"{name}_seconds": seconds for name, seconds in timings.items()}, **details}
    return markdown, results_md, durable_files.write_results_json(workdir, results)
