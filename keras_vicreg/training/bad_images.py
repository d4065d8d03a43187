"""Bad images in a pretraining source, found before training: listed in the workdir, and a run
stopped when there are too many of them.

An image that does not decode, or whose header declares more than `config.max_image_pixels`, is
skipped by the pipeline every epoch (`keras_vicreg.data.image_scan`). A few are harmless; many
mean broken data, and enough of them to leave fewer full batches than `steps_per_epoch` would stop
the run at the end of its first epoch (`checkpointing.ShortEpochError`), after hours of training.
So `check_source` scans the split once, before training, writes what it found to
`<workdir>/undecodable_images.json`, and raises `UndecodableImagesError` (a ValueError: exit
status INVALID_CONFIG) when nothing decodes, when more than `config.max_undecodable_fraction` of
the images are skipped, or when the rest no longer fill `steps_per_epoch` batches. A scan that
passed is reused by a resumed run of the same data and budget: a preemptible job does not rescan
at every restart; one that stopped the run is not, so that a fixed source is scanned again.
"""

import json
import os
import sys
import time

from tensorflow.io import gfile

from keras_vicreg.data import image_scan
from keras_vicreg.training import durable_files

REPORT_FILE = "undecodable_images.json"
_NAMED = 10  # images named in an error message; the file lists them all


class UndecodableImagesError(ValueError):
    """Too many images of the pretraining source do not decode (or are over the pixel budget)."""


def _key(config, split, channels):
    dataset = config.dataset
    if os.path.isdir(os.path.expanduser(str(dataset))):
        dataset = os.path.abspath(os.path.expanduser(str(dataset)))
    return {"dataset": dataset, "split": split, "count": config.num_examples,
            "max_image_pixels": config.max_image_pixels, "channels": channels}


def _saved_pass(path, key):
    if not path or not gfile.exists(path):
        return None
    try:
        with gfile.GFile(path) as file:
            report = json.loads(file.read())
    except ValueError:  # unreadable: scan again
        return None
    if report.get("key") == key and report.get("passed"):
        return report
    return None


def _listing(skipped, limit=_NAMED):
    lines = [
        f"    #{image['index']}"
        + (f" {image['file']}" if image["file"] else "")
        + (f": {image['reason']}" if image["reason"] else "")
        for image in skipped[:limit]
    ]
    if len(skipped) > limit:
        lines.append(f"    ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def _problem(config, count, skipped, where):
    """The message of `UndecodableImagesError` for the scan's result, or None if it passes."""
    bad, limit = len(skipped), config.max_undecodable_fraction
    named = f"{where}:\n{_listing(skipped)}"
    if bad == count:
        return (f"None of the {count} images of {config.dataset!r} decodes (every one is listed "
                f"in {named}\nThere is nothing to train on: check config.dataset and the "
                f"files. Received: config.dataset={config.dataset!r}")
    if bad > limit * count:
        return (f"{bad} of the {count} images of {config.dataset!r} ({bad / count:.2%}) do not "
                f"decode or are over max_image_pixels={config.max_image_pixels}, more than "
                f"config.max_undecodable_fraction={limit} allows; the run stops before training. "
                f"They are listed in {named}\nRepair or remove them (then set "
                f"--config.num_examples), or raise --config.max_undecodable_fraction. "
                f"Received: config.max_undecodable_fraction={limit}")
    full = (count - bad) // config.batch_size
    if full < config.steps_per_epoch:
        return (f"{bad} of the {count} images of {config.dataset!r} do not decode or are over "
                f"max_image_pixels; the {count - bad} others fill {full} batches of "
                f"{config.batch_size}, fewer than steps_per_epoch={config.steps_per_epoch}, so "
                "every epoch would run out of data (ShortEpochError) at its end. They are listed "
                f"in {named}\nRepair or remove them (then set --config.num_examples), or set "
                f"--config.steps_per_epoch={full}. "
                f"Received: config.steps_per_epoch={config.steps_per_epoch}")
    return None


def check_source(config, dataset, split, channels, workdir=None):
    """Scans the split's images; writes the report; raises if there are too many bad ones.

    Args:
        config: the validated pretraining config.
        dataset: the split as a `tf.data.Dataset` of dicts, images encoded, in a fixed order.
        split: the split's name (part of what identifies a saved scan).
        channels: the channels the pipeline decodes.
        workdir: where `REPORT_FILE` goes; None: no file (and no saved scan to reuse).

    Returns:
        The report written (a dict; see docs/guide.md for its fields).

    Raises:
        UndecodableImagesError: no image decodes, more than `config.max_undecodable_fraction` of
            them do not, or the others fill fewer than `config.steps_per_epoch` batches.
    """
    path = os.path.join(workdir, REPORT_FILE) if workdir else None
    key = _key(config, split, channels)
    saved = _saved_pass(path, key)
    if saved is not None:
        print(f"Reusing the image scan of {path} ({len(saved['skipped'])} skipped; delete the file "
              "to scan again).", flush=True)
        return saved
    count = config.num_examples
    print(f"Scanning the {count} images of {config.dataset!r} split {split!r}: each decoded once "
          "before training, to find those the pipeline would skip.", flush=True)
    start = time.monotonic()
    scan = image_scan.scan_images(dataset, count, max_pixels=config.max_image_pixels,
                                  channels=channels)
    for image in scan.skipped:  # a folder's files as the user named them, not through the link
        if image["file"] and os.path.exists(image["file"]):  # that `sources.image_folder` makes
            image["file"] = os.path.realpath(image["file"])
    problem = _problem(config, count, scan.skipped, path or "no file (no workdir given)")
    report = {
        "key": key,
        "scanned": scan.count,
        "skipped_count": len(scan.skipped),
        "max_undecodable_fraction": config.max_undecodable_fraction,
        "passed": problem is None,
        "seconds": round(time.monotonic() - start, 1),
        "skipped": scan.skipped,
    }
    if path:
        gfile.makedirs(workdir)
        durable_files.write_json_atomically(path, report)
    if problem:
        raise UndecodableImagesError(problem)
    print(f"Scanned {count} images in {report['seconds']} s: {len(scan.skipped)} skipped"
          + (f", each epoch; listed in {path}" if scan.skipped and path else "") + ".",
          file=sys.stderr if scan.skipped else sys.stdout, flush=True)
    return report
