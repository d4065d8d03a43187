"""Fashion-MNIST as a real tfds dataset, offline, from Debian's `dataset-fashion-mnist` package.

The package (`apt-get install dataset-fashion-mnist`) ships Zalando's four original idx files in
/usr/share/datasets/fashion-mnist. Their content is the original's, but Debian rewrote the gzip
headers (no file name, a new time stamp), so their checksums differ from the ones tfds registered
for its download and tfds' own builder rejects them as a manual download. This module runs tfds'
own `fashion_mnist` builder unchanged (same name, version, features, examples and split files), with
one difference: the checksums it expects are those of the local files, which its download manager
then takes from the manual directory instead of the network. The result is read back with
`tfds.load("fashion_mnist", data_dir=...)` like a downloaded one.

Where the Debian files are present they are used without trying the network: they are the same data,
and an offline download attempt spends minutes in retries before it fails.
"""

import gzip
import hashlib
import os
import struct
import tempfile

import tensorflow_datasets as tfds

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# File name -> (idx magic number, number of items) of the original release.
FILES = {
    "train-images-idx3-ubyte.gz": (2051, 60000),
    "train-labels-idx1-ubyte.gz": (2049, 60000),
    "t10k-images-idx3-ubyte.gz": (2051, 10000),
    "t10k-labels-idx1-ubyte.gz": (2049, 10000),
}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_local_files(local_dir=DEBIAN_DIR):
    """Whether `local_dir` has the four idx files; raises a ValueError if one has the wrong content.

    Args:
        local_dir: the folder of the four `*-ubyte.gz` files.

    Returns:
        True when all four files are there with the right idx headers, False when any is missing.
    """
    paths = {name: os.path.join(local_dir, name) for name in FILES}
    if not all(os.path.isfile(path) for path in paths.values()):
        return False
    for name, (magic, count) in FILES.items():
        with gzip.open(paths[name], "rb") as f:
            header = struct.unpack(">II", f.read(8))
        if header != (magic, count):
            raise ValueError(
                f"{paths[name]} is not Fashion-MNIST's {name}: its idx header (magic, count) is "
                f"{header}, expected {(magic, count)}. Received: local_dir={local_dir!r}"
            )
    return True


def _local_builder_class(local_dir):
    """tfds' fashion_mnist builder, expecting the checksums of the files in `local_dir`."""
    base = tfds.builder_cls("fashion_mnist")
    local_infos = {
        base.URL + name: tfds.download.checksums.UrlInfo(
            size=os.path.getsize(os.path.join(local_dir, name)),
            checksum=_sha256(os.path.join(local_dir, name)),
            filename=name,
        )
        for name in FILES
    }

    class LocalFashionMNIST(base, skip_registration=True):
        name = "fashion_mnist"
        url_infos = local_infos

    return LocalFashionMNIST


def prepare_fashion_mnist(data_dir=None, *, local_dir=DEBIAN_DIR, download=True):
    """Prepares tfds' `fashion_mnist` in `data_dir` (once) and returns its builder.

    From the idx files in `local_dir` when they are there (offline), else by tfds' download.

    Args:
        data_dir: tfds' data directory (tfds' default, `~/tensorflow_datasets`, if None).
        local_dir: the folder of the four original idx files (Debian's package puts them in
            /usr/share/datasets/fashion-mnist).
        download: whether tfds may download the files when `local_dir` lacks them.

    Returns:
        The prepared `tfds.core.DatasetBuilder` of fashion_mnist 3.0.1.
    """
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if check_local_files(local_dir):
        local = _local_builder_class(local_dir)(data_dir=data_dir)
        # The extracted idx files (55 MB) are not worth keeping once the tfrecords are written.
        with tempfile.TemporaryDirectory() as download_dir:
            local.download_and_prepare(
                download_dir=download_dir,
                download_config=tfds.download.DownloadConfig(manual_dir=local_dir),
            )
        return tfds.builder("fashion_mnist", data_dir=data_dir)
    help_text = (
        "Install Debian's copy of the files (`apt-get install dataset-fashion-mnist`, which puts "
        f"them in {DEBIAN_DIR}) or pass `local_dir` to a folder holding {sorted(FILES)}"
    )
    if not download:
        raise ValueError(
            f"Fashion-MNIST is not prepared in {builder.data_dir_root}, the local files are "
            f"missing and download=False. {help_text}. Received: local_dir={local_dir!r}"
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # tfds raises many kinds (connection, checksum, HTTP)
        raise RuntimeError(
            f"tfds could not download Fashion-MNIST ({type(error).__name__}: {error}). {help_text}."
        ) from error
    return builder
