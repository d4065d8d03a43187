"""Files that a crash cannot leave half-written or quietly wrong: fsync, write-then-rename, and
a check that a checkpoint file holds only finite values.

Local paths are flushed with `os.fsync` (the file, then its directory, so that a rename survives a
host crash); remote paths (`gs://`, through `tf.io.gfile`) appear whole or not at all.
"""

import json
import os

import h5py
import numpy as np
from tensorflow.io import gfile

TEMPORARY_PREFIX = ".partial-"


def is_local(path):
    """Whether `path` is on a local file system (not `gs://` and the like)."""
    return "://" not in str(path)


def fsync(path):
    """Flushes a local file, or a directory's entries, to disk (no-op for remote paths)."""
    if not is_local(path):
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_atomically(path, value, default=None, sort_keys=True):
    """Writes `value` as JSON to `path` so that a reader sees the old file or the new one, whole.

    Written under a temporary name, flushed to disk, then renamed over `path` (local paths and,
    through `tf.io.gfile`, cloud storage). `default` and `sort_keys` are `json.dump`'s: how to
    write what JSON has no type for (`float` for NumPy scalars), and whether to sort the keys
    (False keeps an order that means something: a table's rows, a dataset's classes).
    """
    directory = os.path.dirname(path) or "."
    gfile.makedirs(directory)
    partial = os.path.join(directory, TEMPORARY_PREFIX + os.path.basename(path))
    with gfile.GFile(partial, "w") as file:
        json.dump(value, file, indent=2, sort_keys=sort_keys, default=default)
    fsync(partial)
    gfile.rename(partial, path, overwrite=True)
    fsync(directory)


def write_results_json(workdir, record):
    """Writes an evaluation's `record` to `<workdir>/results.json` atomically; returns the path.

    The keys keep their order (a table's rows, a dataset's classes) and NumPy scalars are written
    as floats.
    """
    path = os.path.join(workdir, "results.json")
    write_json_atomically(path, record, default=float, sort_keys=False)
    return path


def holds_finite_values(path):
    """Whether every array in a checkpoint file (weights and optimizer state) is finite."""
    finite = [True]

    def check(name, item):
        if isinstance(item, h5py.Dataset) and item.dtype.kind in "fc" and item.size:
            finite[0] = finite[0] and bool(np.all(np.isfinite(item[()])))

    with h5py.File(path, "r") as file:
        file.visititems(check)
    return finite[0]
