"""configs/paper_flexibility.py and configs/paper_ablations.py: every row validates, trains and is
the method it names; the config keys of `keras_vicreg.config.model_options` reach the model."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vicreg.config import model_options
from keras_vicreg.config import pretraining
from keras_vicreg.training import recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLEXIBILITY = ("sw_r50", "dw_r50", "da_r50_r101", "da_r50_vits")
METHOD_ROWS = ("byol_me_sg_pr_bn", "simsiam_sg_pr_bn", "simsiam_sg_pr", "simsiam_sg",
               "vicreg_pr", "vicreg_pr_bn", "vicreg_bn", "vicreg")
ABLATIONS = tuple(f"{row}_{reg}" for row in METHOD_ROWS for reg in ("inv", "var", "varcov"))

def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def flexibility_rows():
    return list(FLEXIBILITY)


# --------------------------------------------------------------------------------------------------
# The configs: every row validates, full size and runlocal, and carries its switches.

@pytest.mark.backend_neutral
@pytest.mark.parametrize("runlocal", [False, True])
def test_every_ablation_row_validates_and_has_the_switches_its_name_lists(runlocal):
    for row in ABLATIONS:
        config = load_config("paper_ablations", f"{row},runlocal" if runlocal else row)
        pretraining.validate(config)
        name, _, reg = row.rpartition("_")
        model = config.model
        assert (model.momentum is not None) == ("_me" in name), row
        assert model.stop_gradient_b == ("_sg" in name), row
        assert (model.predictor is not None) == ("_pr" in name), row
        assert model.expander_batch_norm == ("_bn" in name), row
        assert (model.std_coeff, model.cov_coeff) == {
            "inv": (0.0, 0.0), "var": (25.0, 0.0), "varcov": (25.0, 1.0)}[reg], row
        method = name.partition("_")[0]
        assert model.invariance == ("mse" if method == "vicreg" else "cosine"), row
        assert model.symmetric == (method != "vicreg" or "_pr" in name), row
        if runlocal:
            assert (config.dataset, config.total_steps) == ("synthetic", 6), row


@pytest.mark.backend_neutral
def test_the_ablation_defaults_are_vicregs_own_row_and_byols_momentum_ramps():
    default = load_config("paper_ablations")
    assert default.to_dict() == load_config("paper_ablations", "vicreg_bn_varcov").to_dict()
    assert (default.model.expander, default.model.expander_batch_norm) == ("8192-8192-8192", True)
    byol = load_config("paper_ablations", "byol_me_sg_pr_bn_inv")
    assert (byol.model.momentum, byol.model.momentum_schedule) == (0.996, "cosine")
    kwargs = model_options.model_kwargs(byol.model, byol.total_steps)
    assert kwargs["momentum_ramp_steps"] == byol.total_steps == 62_500


@pytest.mark.backend_neutral
@pytest.mark.parametrize("name", ["paper_ablations", "paper_flexibility"])
def test_an_unknown_row_is_an_error_listing_the_allowed_ones(name):
    with pytest.raises(ValueError, match="vicreg_bn_varcov" if "abl" in name else "da_r50_r101"):
        load_config(name, "vicreg_bn_cov")
    with pytest.raises(ValueError, match="takes one of"):  # two rows at once
        load_config(name, ",".join(ABLATIONS[:2] if "abl" in name else FLEXIBILITY[:2]))


@pytest.mark.backend_neutral
@pytest.mark.parametrize("row", flexibility_rows())
@pytest.mark.parametrize("runlocal", [False, True])
def test_every_flexibility_row_validates(row, runlocal):
    config = load_config("paper_flexibility", f"{row},runlocal" if runlocal else row)
    pretraining.validate(config)
    expected = {"sw_r50": "shared", "dw_r50": "own_weights"}.get(row, "own_architecture")
    assert config.model.branch_b == expected
    if not runlocal:
        assert config.model.backbone == "resnet50"
        assert config.model.backbone_b == {"da_r50_r101": "resnet101",
                                           "da_r50_vits": "vit_s16"}.get(row)


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(branch_b="own"), "config.model.branch_b must be how branch b"),
        (dict(branch_b="own_architecture"), "config.model.backbone_b must be branch b's"),
        (dict(backbone_b="resnet18"), 'set branch_b="own_architecture" too'),
        (dict(predictor="16-64"), "must end at the embedding width, the expander's last width"),
        (dict(predictor="16-x"), "config.model.predictor: The expander spec"),
        (dict(momentum=1.0), r"in \[0, 1\)"),
        (dict(momentum=0.99, branch_b="own_weights"), 'it needs branch_b="shared"'),
        (dict(momentum_schedule="linear"), "the momentum's schedule"),
        (dict(symmetric=True, branch_b="own_weights"), "feeds both views to both sides"),
        (dict(invariance="l1"), "an invariance term, one of \\['mse', 'cosine'\\]"),
        (dict(gamma=0.0), "config.model.gamma must be > 0"),
    ],
)
def test_a_bad_switch_is_a_clear_error(overrides, message):
    config = load_config("tiny")
    for key, value in overrides.items():
        config.model[key] = value
    with pytest.raises(ValueError, match=message):
        pretraining.validate(config)


@pytest.mark.backend_neutral
def test_the_config_keys_reach_the_model():
    config = load_config("paper_ablations", "byol_me_sg_pr_bn_var,runlocal")
    model = recipe.make_model(config, 3)
    assert (model.momentum, model.momentum_ramp_steps) == (0.996, 6)
    assert (model.predictor_spec, model.symmetric) == ("32-64", True)
    assert model.loss_options["invariance"] == "cosine"
    assert (model.loss_options["std_coeff"], model.loss_options["cov_coeff"]) == (25.0, 0.0)
    flexible = load_config("paper_flexibility", "da_r50_r101,runlocal")
    model = recipe.make_model(flexible, 3)
    assert model.backbone.name == "convnet"
    assert model.backbone_b.name == "resnet18_b"
    constant = load_config("paper_ablations", "byol_me_sg_pr_bn_var,runlocal")
    constant.model.momentum_schedule = "constant"
    assert recipe.make_model(constant, 3).momentum_ramp_steps is None


# --------------------------------------------------------------------------------------------------
# Training: every row in one process (TensorFlow), a sample on JAX and PyTorch, and the binary.

def train_rows(name, rows):
    """Builds and trains each `:<row>,runlocal` on its generated data; checks the weights moved."""
    data = None
    for row in rows:
        config = load_config(name, f"{row},runlocal")
        pretraining.validate(config)
        keras.utils.set_random_seed(config.seed)
        if data is None:  # every row of a file reads the same generated data
            data = recipe.Data(config, None)
        model = recipe.compile_model(recipe.make_model(config, data.channels), config)
        # Eager: tracing each row's step would take longer than its two steps; the binary's
        # traced step is test_the_binary_trains_and_exports_a_row's.
        model.run_eagerly = True
        kernel = model.backbone.trainable_weights[0]
        before = keras.ops.convert_to_numpy(kernel.value).copy()
        history = model.fit(data.epoch(0), steps_per_epoch=2, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1]), row
        assert not np.allclose(before, keras.ops.convert_to_numpy(kernel.value)), row


@pytest.mark.slow
def test_every_ablation_row_trains():
    train_rows("paper_ablations", ABLATIONS)


@pytest.mark.slow
@pytest.mark.parametrize("row", flexibility_rows())
def test_every_flexibility_row_trains(row):
    train_rows("paper_flexibility", [row])


@pytest.mark.backend_neutral
def test_a_sample_of_rows_trains_on_this_backend():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow trains every row in test_every_*_row_trains")
    train_rows("paper_ablations", ["byol_me_sg_pr_bn_varcov", "simsiam_sg_pr_inv"])
    train_rows("paper_flexibility", ["dw_r50"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["paper_ablations.py:byol_me_sg_pr_bn_var,runlocal",
                                    "paper_flexibility.py:dw_r50,runlocal"])
def test_the_binary_trains_and_exports_a_row(config, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "trainers.pretrain", f"--config=configs/{config}",
         f"--workdir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 6/6" in result.stdout
    assert (tmp_path / "export" / "backbone.keras").exists()
