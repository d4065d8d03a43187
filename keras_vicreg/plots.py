"""PNG plots of a VICReg run: loss terms and online evaluation over training, embedding stds, a 2-D
view of features.

The three pictures that tell whether VICReg learned something or collapsed: the loss terms should
fall together, every embedding dimension should keep a standard deviation near the variance term's
target (1), and the classes should separate in a 2-D projection of the test representations.
Matplotlib draws off-screen (the Agg backend), so the plots work on a headless machine.
"""

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402  (after choosing the backend)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_TERM_AXES = (("loss", "total loss"), ("invariance", "invariance (MSE)"),
              ("variance", "variance (hinge on std)"), ("covariance", "covariance"),
              ("std", "mean std of embeddings"))


def read_scalars(log_dir, prefix="train/"):
    """The scalars a run wrote to TensorBoard under `prefix`, for `plot_loss_terms`.

    Read from the event files rather than recorded in memory, so that a run resumed after a kill
    (whose event files are several, possibly overlapping) plots all of its steps; where two files
    hold the same step, the value written last wins, as the resumed run recomputed that step.

    Args:
        log_dir: the TensorBoard directory (`keras_vicreg.training.summaries.TensorBoardSummaries`').
        prefix: the tags' prefix, removed from the names.

    Returns:
        (steps, terms): the sorted steps, and {name: values at those steps} (NaN where a name was
        not written at a step).
    """
    import tensorflow as tf

    written = {}  # {name: {step: (wall time, value)}}
    for path in tf.io.gfile.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if not value.tag.startswith(prefix):
                    continue
                number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                          else value.simple_value)
                steps = written.setdefault(value.tag[len(prefix):], {})
                if event.step not in steps or steps[event.step][0] <= event.wall_time:
                    steps[event.step] = (event.wall_time, number)
    steps = sorted({step for values in written.values() for step in values})
    terms = {
        name: [values[step][1] if step in values else np.nan for step in steps]
        for name, values in written.items()
    }
    return steps, terms


def plot_loss_terms(steps, terms, path):
    """Plots each VICReg loss term (and the embeddings' std) against the training step.

    Args:
        steps: the global steps of the records.
        terms: dict from a term's name ("loss", "invariance", "variance", "covariance", "std") to
            its values at `steps`; names missing from the dict are left out.
        path: the PNG file to write.
    """
    axes_terms = [(name, title) for name, title in _TERM_AXES if name in terms]
    if not axes_terms or not len(steps):
        raise ValueError(
            "Nothing to plot: give at least one recorded step of one of the terms "
            f"{[name for name, _ in _TERM_AXES]}. Received: terms={sorted(terms)}, "
            f"{len(steps)} steps"
        )
    figure, axes = pyplot.subplots(1, len(axes_terms), figsize=(3.2 * len(axes_terms), 3.0))
    for axis, (name, title) in zip(np.atleast_1d(axes), axes_terms):
        axis.plot(steps, terms[name], linewidth=1.2)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    figure.suptitle("VICReg loss terms during pretraining (mean over each logged window)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_online_eval(log_dir, path):
    """Plots the online evaluation of a run (`config.online_eval`) against the training step.

    The held-out `knn_top1` and `probe_top1` ("eval/" in TensorBoard,
    `keras_vicreg.evaluation.online`) and the probe's running top-1 on the training batches
    ("train/probe_train_top1", with augmented views), in percent.

    Args:
        log_dir: the run's TensorBoard directory (`<workdir>/tensorboard`).
        path: the PNG file to write.
    """
    steps, held_out = read_scalars(log_dir, "eval/")
    train_steps, train = read_scalars(log_dir, "train/")
    if not steps:
        raise ValueError(
            f"Nothing to plot: {log_dir} holds no eval/ scalars (a run with the online probe and "
            f"a held-out split writes them). Received: log_dir={log_dir!r}"
        )
    figure, axis = pyplot.subplots(figsize=(5.0, 3.4))
    for name, label in (("knn_top1", "kNN top-1 (held out)"),
                        ("probe_top1", "online probe top-1 (held out)")):
        if name in held_out:
            axis.plot(steps, held_out[name], marker="o", markersize=3, label=label)
    if "probe_train_top1" in train:
        axis.plot(train_steps, train["probe_train_top1"], linewidth=0.8, alpha=0.6,
                  label="online probe top-1 (training views)")
    axis.set_xlabel("step", fontsize=8)
    axis.set_ylabel("top-1 (%)", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    axis.set_title("Online evaluation during pretraining", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_std_histogram(embeddings, path, *, reference=None, gamma=1.0):
    """Histogram of the per-dimension standard deviation of embeddings.

    Args:
        embeddings: (n, d) array, e.g. the expander's outputs on the test images.
        path: the PNG file to write.
        reference: an optional (n, d') array drawn alongside (e.g. a random-weights network's).
        gamma: the variance term's target std, drawn as a vertical line.
    """
    stds = _stds(embeddings, "embeddings")
    figure, axis = pyplot.subplots(figsize=(5.5, 3.5))
    bins = np.linspace(0.0, max(stds.max(), gamma) * 1.1, 50)
    axis.hist(stds, bins=bins, alpha=0.75, label=f"VICReg ({stds.size} dims)")
    if reference is not None:
        reference_stds = _stds(reference, "reference")
        bins = np.linspace(0.0, max(bins[-1], reference_stds.max() * 1.1), 50)
        axis.hist(reference_stds, bins=bins, alpha=0.5,
                  label=f"random weights ({reference_stds.size} dims)")
    axis.axvline(gamma, color="black", linestyle="--", linewidth=1, label=f"target std {gamma}")
    axis.set_xlabel("standard deviation of an embedding dimension over the test set")
    axis.set_ylabel("dimensions")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def pca_2d(features):
    """The projection of `features` (n, d) on their two leading principal components, (n, 2)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 2:
        raise ValueError(
            f"PCA needs at least 2 rows and 2 columns. Received: features.shape={features.shape}"
        )
    centred = features - features.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return (centred @ components[:2].T).astype(np.float32)


def plot_embedding_2d(features, labels, path, *, class_names=FASHION_MNIST_CLASSES, title=None):
    """Scatter plot of the 2-D PCA of `features`, coloured by class.

    Args:
        features: (n, d) array, e.g. the backbone's representations of the test images.
        labels: (n,) integer class labels.
        path: the PNG file to write.
        class_names: a name per class for the legend (indices are used past its end).
        title: the plot's title.
    """
    labels = np.asarray(labels).reshape(-1)
    points = pca_2d(features)
    if len(labels) != len(points):
        raise ValueError(
            "One label per feature row is needed. "
            f"Received: {len(points)} rows and labels.shape={labels.shape}"
        )
    figure, axis = pyplot.subplots(figsize=(6.5, 5.5))
    colours = pyplot.get_cmap("tab10")
    for index, label in enumerate(np.unique(labels)):
        mask = labels == label
        name = class_names[label] if label < len(class_names) else str(label)
        axis.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.6,
                     color=colours(index % 10), label=name)
    axis.set_xlabel("principal component 1")
    axis.set_ylabel("principal component 2")
    axis.set_title(title or "PCA of the test representations", fontsize=10)
    axis.legend(fontsize=7, markerscale=3, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _stds(embeddings, name):
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"`{name}` must be (n, d) with n >= 2. Received: {name}.shape={embeddings.shape}"
        )
    return embeddings.std(axis=0)
