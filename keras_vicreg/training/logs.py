"""What a training binary prints: its own progress and results, not the libraries' log lines.

TensorFlow's SavedModel writer, `tf.function`'s retracing notices and tensorflow-datasets log
through Python's `logging` (absl's handler prints them as "I1202 12:00:00.000000 ... file.py:123]
...") and through `warnings`. A binary made for newcomers (`trainers/demo.py`) quiets them, so that
its table follows its last epoch; its `--verbosity` flag (absl's) brings them back.
"""

import logging
import warnings

# The loggers of the libraries a pretraining run and its export go through.
LIBRARY_LOGGERS = ("tensorflow", "absl", "tensorflow_datasets", "jax", "h5py", "keras")
# The modules whose deprecation and usage warnings are theirs to fix, not the reader's: a regular
# expression on the warning's module (keras_vicreg's own warnings, e.g. CollapseMonitor's, stay).
LIBRARY_WARNINGS = r"(keras|tensorflow|tensorflow_datasets|tf_keras|jax|absl)(\.|$)"


def quiet_library_logs():
    """Lets through only errors of Python's root logger and of the libraries' loggers, hides the
    libraries' deprecation and usage warnings, and turns off tensorflow-datasets' progress bars.

    The binary's own `print`s and Keras' progress bar are untouched. Errors still print.
    """
    logging.getLogger().setLevel(logging.ERROR)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl is a dependency of TensorFlow; without it nothing logs through it
        pass
    for category in (DeprecationWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_WARNINGS)
    try:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    except ImportError:
        pass
