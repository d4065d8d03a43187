"""Where the images come from: tensorflow-datasets by name, or a local folder of class subfolders.

Every source goes through tfds: datasets by name are prepared with `download_and_prepare` (ImageNet
from its manually downloaded tar files, Fashion-MNIST also offline from Debian's
`dataset-fashion-mnist`), and folders are read with `tfds.ImageFolder`. Images come out still
encoded (`tfds.decode.SkipDecoding`), so that the pipeline can decode and crop a JPEG in one step.
"""

import dataclasses
import hashlib
import os
import tempfile

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vicreg.data import fashion_mnist

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The files of https://image-net.org/download-images that tfds' imagenet2012 builders read.
IMAGENET_TARS = (
    ("ILSVRC2012_img_train.tar", 147_897_477_120),
    ("ILSVRC2012_img_val.tar", 6_744_924_160),
)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What keras_vicreg knows of a dataset: its splits and its augmentation preset.

    Args:
        pretrain_split: the split pretraining reads (no labels needed).
        train_split: the labelled training split of the evaluations.
        eval_split: the split evaluations report on.
        augmentation: the `keras_vicreg.data.transforms` preset.
        image_size: the side of the views, in pixels.
        manual_download: the data must be downloaded by hand (ImageNet).
    """

    pretrain_split: str
    train_split: str
    eval_split: str
    augmentation: str
    image_size: int
    manual_download: bool = False


_IMAGENET = DatasetSpec("train", "train", "validation", "imagenet", 224, manual_download=True)
_CIFAR = DatasetSpec("train", "train", "test", "small", 32)
DATASETS = {
    "imagenet2012": _IMAGENET,
    "imagenet2012_subset/1pct": _IMAGENET,
    "imagenet2012_subset/10pct": _IMAGENET,
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "stl10": DatasetSpec("unlabelled", "train", "test", "imagenet", 96),
    "imagenette": DatasetSpec("train", "train", "validation", "imagenet", 224),
    "fashion_mnist": DatasetSpec("train", "train", "test", "grayscale", 28),
}
_FOLDER = DatasetSpec("train", "train", "validation", "imagenet", 224)


def is_folder(source):
    """Whether `source` names an existing local directory (rather than a tfds dataset)."""
    return isinstance(source, (str, os.PathLike)) and os.path.isdir(os.path.expanduser(source))


def dataset_spec(source):
    """The `DatasetSpec` of a tfds name (with or without its config) or of a folder.

    Args:
        source: a tfds name such as "cifar10" or "imagenette/320px-v2", or a folder path.

    Returns:
        The `DatasetSpec`; folders get ImageNet's settings with splits "train" and "validation".
    """
    if is_folder(source):
        return _FOLDER
    name = str(source)
    spec = DATASETS.get(name) or DATASETS.get(name.split("/")[0])
    if spec is None:
        raise ValueError(
            f"Unknown dataset; known names are {sorted(DATASETS)}, or pass a folder of class "
            "subfolders, or a tf.data.Dataset (any other tfds dataset: "
            f"keras_vicreg.data.load_split(name, split)). Received: source={source!r}"
        )
    return spec


def default_split(source, purpose):
    """The split a purpose reads by default.

    Args:
        source: a tfds name or a folder.
        purpose: "pretrain_split", "train_split" or "eval_split" (a `DatasetSpec` field).

    Returns:
        The split's name; for a folder's evaluation, the first of "validation", "val" and "test"
        that it has, else "train".
    """
    if is_folder(source) and purpose == "eval_split":
        splits = image_folder(source).info.splits
        return next((s for s in ("validation", "val", "test") if s in splits), "train")
    return getattr(dataset_spec(source), purpose)


def check_imagenet_manual_dir(manual_dir):
    """Raises a ValueError saying which ImageNet tar files go where, if any is missing.

    Args:
        manual_dir: the directory tfds reads the tar files from (`<data_dir>/downloads/manual` by
            default).
    """
    manual_dir = os.path.expanduser(str(manual_dir))
    lines, complete = [], True
    for filename, size in IMAGENET_TARS:
        path = os.path.join(manual_dir, filename)
        found = os.path.getsize(path) if os.path.isfile(path) else None
        state = "found" if found == size else "missing"
        if found is not None and found != size:
            state = f"incomplete: {found:,} bytes"
        complete = complete and found == size
        lines.append(f"  {path}  ({size / 2**30:.1f} GiB, {size:,} bytes): {state}")
    if not complete:
        raise ValueError(
            "ImageNet (imagenet2012, imagenet2012_subset) must be downloaded by hand: register at "
            "https://image-net.org/download-images, download these two files of ILSVRC2012 and put "
            "them here:\n"
            + "\n".join(lines)
            + "\nor pass `manual_dir` to where they are. tfds then extracts them once into "
            f"`data_dir` (hours; about 150 GB). Received: manual_dir={manual_dir!r}"
        )


def load_builder(name, *, data_dir=None, manual_dir=None, download=True):
    """Returns the prepared tfds builder of a dataset, preparing it first where needed.

    Args:
        name: a tfds name, e.g. "cifar10", "imagenet2012", "imagenet2012_subset/1pct".
        data_dir: tfds' data directory (tfds' default, `~/tensorflow_datasets`, if None).
        manual_dir: where manually downloaded files are (ImageNet's tar files); tfds' default is
            `<data_dir>/downloads/manual`.
        download: whether to download and prepare a dataset that is not prepared yet.

    Returns:
        A `tfds.core.DatasetBuilder` whose data is ready.
    """
    if str(name).split("/")[0] == "fashion_mnist":
        return fashion_mnist.prepare_fashion_mnist(data_dir, download=download)
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if not download:
        raise ValueError(
            f"The dataset {name!r} is not prepared in {builder.data_dir_root} and "
            f"download=False. Received: data_dir={data_dir!r}"
        )
    spec = DATASETS.get(name) or DATASETS.get(str(name).split("/")[0])
    if spec is not None and spec.manual_download:
        manual_dir = manual_dir or os.path.join(builder.data_dir_root, "downloads", "manual")
        check_imagenet_manual_dir(manual_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)
    return builder


def _has_images(folder):
    return any(f.lower().endswith(IMAGE_EXTENSIONS) for f in tf.io.gfile.listdir(folder))


def _subfolders(folder):
    return sorted(
        f.rstrip("/")
        for f in tf.io.gfile.listdir(folder)
        if tf.io.gfile.isdir(os.path.join(folder, f))
    )


def image_folder(path):
    """A `tfds.ImageFolder` over `path/class/image` or `path/split/class/image`.

    A folder of class subfolders is read as one split named "train" (through a symbolic link in the
    temporary directory, since `tfds.ImageFolder` expects split folders).

    Args:
        path: the folder.

    Returns:
        The `tfds.ImageFolder` builder; its `info.splits` lists the splits.
    """
    root = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(root):
        raise ValueError(f"Not a folder. Received: path={path!r}")
    subfolders = _subfolders(root)
    if not subfolders:
        what = "has images but no class subfolders" if _has_images(root) else "is empty"
        raise ValueError(
            f"The folder {what}: put each class's images (.jpg, .jpeg, .png) in a subfolder named "
            f"after the class, path/class/image.jpg, or path/split/class/image.jpg. "
            f"Received: path={path!r}"
        )
    if any(_has_images(os.path.join(root, f)) for f in subfolders):
        root = _as_train_split(root)
    builder = tfds.ImageFolder(root)
    if not sum(split.num_examples for split in builder.info.splits.values()):
        raise ValueError(
            "The folder's class subfolders hold no .jpg, .jpeg or .png images. "
            f"Received: path={path!r}"
        )
    return builder


def _as_train_split(class_root):
    digest = hashlib.sha1(class_root.encode()).hexdigest()[:16]
    root = os.path.join(tempfile.gettempdir(), "keras_vicreg_image_folders", digest)
    os.makedirs(root, exist_ok=True)
    link = os.path.join(root, "train")
    if os.path.realpath(link) != os.path.realpath(class_root):
        try:
            os.symlink(class_root, link)
        except FileExistsError:  # another process made the same link meanwhile
            pass
    return root


def _num_shards(builder, split):
    """The number of files of a split, 0 where tfds does not know it."""
    try:
        return builder.info.splits[split].num_shards
    except (KeyError, ValueError):
        return 0


def load_split(
    source,
    split,
    *,
    data_dir=None,
    manual_dir=None,
    download=True,
    shuffle_files=False,
    seed=None,
    input_context=None,
):
    """Reads one split of a tfds dataset or of a folder, images still encoded.

    Args:
        source: a tfds name or a folder (see `image_folder`).
        split: the split, e.g. "train" or "train[:10%]" (tfds' slicing works for tfds names).
        data_dir, manual_dir, download: see `load_builder`.
        shuffle_files: shuffle the order of tfds' files (seeded by `seed`); a folder's images
            always come in a fixed, shuffled order (`tfds.ImageFolder`'s).
        seed: the seed of that shuffle.
        input_context: a `tf.distribute.InputContext`; this input pipeline then reads only its
            shard: whole files where the split has enough of them, else every n-th example.

    Returns:
        (dataset, builder): a `tf.data.Dataset` of dicts with "image" (encoded bytes) and
        "label", and the tfds builder (`builder.info` has the class names and split sizes).
    """
    if is_folder(source):
        builder = image_folder(source)
    else:
        builder = load_builder(source, data_dir=data_dir, manual_dir=manual_dir, download=download)
    pipelines = input_context.num_input_pipelines if input_context else 1
    by_file = (
        pipelines > 1
        and not isinstance(builder, tfds.ImageFolder)
        and _num_shards(builder, split) >= pipelines
    )
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, input_context=input_context if by_file else None
    )
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files and not isinstance(builder, tfds.ImageFolder),
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
    )
    if pipelines > 1 and not by_file:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    return dataset, builder
