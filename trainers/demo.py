r"""VICReg on Fashion-MNIST on a laptop CPU, end to end: pretrain, export, evaluate, compare, plot.

    bash scripts/demo.sh                        # setup.sh, then the command below
    python -m trainers.demo --workdir=/tmp/vicreg_demo
    python -m trainers.demo --workdir=/tmp/vicreg_tiny \
        --config=configs/fashion_mnist_demo.py:runlocal --config.epochs=1 \
        --eval_config=configs/fashion_mnist_demo_eval.py:runlocal

Prepares Fashion-MNIST offline, pretrains VICReg on the 60,000 training images without their labels
(`keras_vicreg.training.recipe`, as `trainers/pretrain.py` does), exports the backbone, and scores
the exported SavedModel's features of the 10,000 test images with a linear classifier and kNN,
against the same protocol on the backbone at its pretraining size, on the same backbone with
random weights and on raw pixels (`keras_vicreg.evaluation.comparison`; the protocol:
`configs/fashion_mnist_demo_eval.py`). The backbones read whole images enlarged to the config's
`eval_image_size` (44 pixels, FixRes), and so does the exported SavedModel's `serve`: the table's
first row is what that file scores.

Prints its progress, the table and where its files are. The log lines of TensorFlow and
tensorflow-datasets (the SavedModel writer's, deprecation notices) are left out unless
`--verbosity` (absl's flag: 0 for their INFO lines, -1 for warnings only) is given.

Writes to --workdir: `results.md` (the table), `results.json`, `config.json`, `export/`
(`backbone.keras` and the SavedModel `saved_model/`), `checkpoints/`, `tensorboard/`, and the plots
`loss_terms.png`, `embedding_std.png` and `pca_test.png`. Run it again to resume an interrupted run.
"""

import os
import sys
import time

import keras
from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.config import pretraining
from keras_vicreg.data import prepare_fashion_mnist
from keras_vicreg.evaluation import comparison
from keras_vicreg.training import exit_codes
from keras_vicreg.training import job
from keras_vicreg.training import logs
from keras_vicreg.training import recipe

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(CONFIGS, "fashion_mnist_demo.py"),
    "The pretraining config file (`:runlocal` for a smoke run).", lock_config=True,
)
_EVAL_CONFIG = config_flags.DEFINE_config_file(
    "eval_config", os.path.join(CONFIGS, "fashion_mnist_demo_eval.py"),
    "The evaluation's config file (`:runlocal` for a smoke run).",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "/tmp/vicreg_demo", "Where checkpoints, summaries, the export and results go."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume even when the config differs from the workdir's config.json in keys that change "
    "what the checkpoints mean.",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logs.quiet_library_logs()
    start = time.time()
    config, evaluation = _CONFIG.value, _EVAL_CONFIG.value
    workdir, data_dir = _WORKDIR.value, _DATA_DIR.value
    eval_size = pretraining.eval_image_size(config)
    recipe.set_threads(config)
    try:
        pretraining.validate(config)
        recipe.keep_what_the_checkpoints_hold(config, workdir)
        comparison.check_evaluation(evaluation)
        if keras.backend.backend() == "torch":
            raise ValueError("The demo exports and scores a SavedModel, which Keras writes from "
                             "the tensorflow and jax backends. Received: KERAS_BACKEND='torch'")
        with job.running(workdir) as running_job:
            recipe.save_config(config, workdir, allow_change=_ALLOW_CONFIG_CHANGE.value)
            prepare_fashion_mnist(data_dir)
            keras.utils.set_random_seed(config.seed)
            keras.mixed_precision.set_dtype_policy(config.mixed_precision)
            data = recipe.Data(config, strategy=None, data_dir=data_dir, workdir=workdir)
            random_model = recipe.make_model(config, data.channels, data.num_classes)

            pretrain_start, pretrain_cpu_start = time.time(), time.process_time()
            model = recipe.compile_model(
                recipe.make_model(config, data.channels, data.num_classes), config)
            start_step = recipe.restore_checkpoint(model, config, workdir)
            recipe.fit(model, config, workdir, data, start_step, stop_signal=running_job.stop_signal,
                       verbose=1 if sys.stdout.isatty() else 2)  # a bar, or a line per epoch
            exported = recipe.export(model, config, workdir, data)
            timings = {"pretrain": time.time() - pretrain_start,
                       "pretrain_cpu": time.process_time() - pretrain_cpu_start}

            print("Evaluating on the test set: features, linear classifiers, kNN", flush=True)
            rows, vicreg_test, random_test = comparison.evaluate(
                os.path.dirname(exported["saved_model"]), random_model.backbone, data.augmentation,
                evaluation, eval_image_size=eval_size, crop_fraction=config.eval_crop_fraction,
                data_dir=data_dir,
            )
            plots = comparison.write_plots(workdir, model, random_model, vicreg_test, random_test)
            timings.update(total=time.time() - start, total_cpu=time.process_time())
            markdown, results_md, results_json = comparison.write_report(
                workdir, rows, timings, start_step=start_step, total_steps=config.total_steps,
                details={"backend": keras.backend.backend(), "eval_image_size": eval_size,
                         "evaluation": evaluation.to_dict()},
            )
    except exit_codes.EXPECTED as error:
        print(error, file=sys.stderr)
        sys.exit(exit_codes.status_of(error))
    print(markdown, flush=True)
    print(f"\nThe files of this run, in {workdir}:\n"
          f"  table        {results_md} (and {os.path.basename(results_json)})\n"
          f"  plots        {', '.join(plots)}\n"
          f"  tensorboard  tensorboard --logdir {os.path.join(workdir, 'tensorboard')}\n"
          f"  export       {exported['saved_model']} (serve reads {eval_size} px), "
          f"{exported['backbone.keras']}", flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=job.parse_flags)
