"""A run's `config.json`: written atomically, and compared with the new config on every resume.

A resumed run restores weights, optimizer state and the step from its checkpoint; a config that
changed in between can change what that state means (another model or precision, another batch
size, schedule or optimizer, other data) and the run then fails later, or worse, goes on quietly:
with mixed precision switched on, Keras skips loading the optimizer's variables, the step counter
returns to 0 and the warmup restarts mid-run. So every key is refused when it differs from the
saved config, except those that only change what is logged, how often, and how the same steps are
computed (`CHANGEABLE`); `allow_change=True` (the binaries' `--allow_config_change`) resumes anyway.
"""

import json
import os
import sys

import keras
from tensorflow.io import gfile

from keras_vicreg.config import pretraining
from keras_vicreg.training import checkpointing
from keras_vicreg.training import multihost

CONFIG_FILE = "config.json"
# Keys that may differ on resume: logging, summaries, checkpoint cadence, compilation and threads,
# the divergence, collapse and bad-image checks, what the export reads at test time, and the
# held-out evaluation (not the probe: its weights are in the checkpoints).
CHANGEABLE = frozenset({
    "checkpoint_every_steps", "keep_checkpoints", "log_every_steps", "summary_every_steps",
    "summary_examples", "summary_image_pairs", "jit_compile", "tf_intra_op_threads",
    "collapse_threshold", "collapse_patience_steps", "nan_check_weights", "eval_image_size",
    "eval_crop_fraction", "max_undecodable_fraction", "online_eval.every_steps",
    "online_eval.held_out_examples", "online_eval.bank_examples", "online_eval.knn_k",
    "online_eval.knn_temperature",
})


# What a run whose config.json lacks a key (written by an older version) behaved as, where that is
# not the schema's default: before the online probe, no run had one ("auto" now resolves to a bool).
ABSENT_MEANS = {"online_eval.probe": False}


class ConfigChangedError(ValueError):
    """The config differs from the saved one in keys that change the meaning of the saved state."""


def _flat(value, prefix=""):
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def changed_keys(saved, resolved):
    """[(key, saved value, new value)] of the keys that differ and are not `CHANGEABLE`.

    A key that the saved config lacks (it was written by an older version) counts as unchanged
    when its new value is what the older version behaved as: `ABSENT_MEANS`, else the schema's
    default.
    """
    before, after = _flat(saved), _flat(resolved)
    defaults = _flat(json.loads(pretraining.default_config().to_json_best_effort()))
    defaults.update(ABSENT_MEANS)
    return [
        (key, before.get(key, "<absent>"), after.get(key, "<absent>"))
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and key not in CHANGEABLE
        and not (key not in before and key in defaults and after.get(key) == defaults[key])
    ]


def keep_what_the_checkpoints_hold(config, workdir):
    """Turns the online probe off for a run resumed from a config.json that predates it.

    Such a run's checkpoints hold no probe variables, so they would not load into a model with a
    probe; the resumed run goes on without one, as it started, and says so. Every process calls
    this before process 0 rewrites config.json (`save_config`); they all read it, then wait for
    each other, so that none reads the rewrite.
    """
    saved = load_saved(workdir)
    multihost.barrier()
    if saved is None or "online_eval" in saved or not config.online_eval.probe:
        return config
    config.online_eval.probe = False
    print(f"Resuming a run in {workdir} whose config.json predates the online probe: its "
          "checkpoints hold none, so this run goes on without it "
          "(config.online_eval.probe=False).", flush=True)
    return config


def load_saved(workdir):
    """The saved config as a dict, or None: none saved, or unreadable (said on stderr)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not gfile.exists(path):
        return None
    try:
        with gfile.GFile(path) as file:
            return json.loads(file.read())
    except ValueError as error:  # empty or cut short: a crash during a write before 0.2
        print(f"Warning: {path} does not read as JSON ({error}); it is replaced by this run's "
              "config, and the resume cannot be checked against it.", file=sys.stderr, flush=True)
        return None


def save_config(config, workdir, *, allow_change=False):
    """Prints the resolved config and writes it to `workdir/config.json`, atomically.

    Raises:
        ConfigChangedError: a saved config differs in keys outside `CHANGEABLE`, naming each key
            with both values, unless `allow_change`; then the differences are printed as a warning.
    """
    print(f"Resolved config ({keras.backend.backend()} backend):\n{config}", flush=True)
    resolved = json.loads(config.to_json_best_effort())
    saved = load_saved(workdir)
    changes = [] if saved is None else changed_keys(saved, resolved)
    if changes:
        listed = "\n".join(f"  - config.{key}: {old!r} (saved) -> {new!r} (now)"
                           for key, old, new in changes)
        if not allow_change:
            raise ConfigChangedError(
                f"The config differs from the one this run in {workdir} started with, in keys "
                f"that change what its checkpoints mean:\n{listed}\nResume with the saved values, "
                "start a new run in another --workdir, or pass --allow_config_change to resume "
                "with the new ones (weights, optimizer state and step as saved)."
            )
        print(f"Warning: resuming with a changed config (--allow_config_change):\n{listed}",
              file=sys.stderr, flush=True)
    checkpointing.write_json_atomically(os.path.join(workdir, CONFIG_FILE), resolved)
