"""keras_vicreg.training.run_config: config.json written atomically and checked on resume."""

import json
import os

import pytest

from keras_vicreg.config import pretraining
from keras_vicreg.training import run_config
from tests.test_pretrain_config import load_config

pytestmark = pytest.mark.backend_neutral


def saved(workdir):
    with open(os.path.join(workdir, "config.json")) as file:
        return json.load(file)


def test_the_first_run_writes_the_resolved_config(tmp_path):
    config = load_config("tiny")
    run_config.save_config(config, str(tmp_path))
    assert saved(tmp_path)["batch_size"] == config.batch_size
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no partial file left


@pytest.mark.parametrize("key, value", [
    ("batch_size", 16), ("mixed_precision", "mixed_float16"), ("epochs", 1),
    ("model.expander", "48-48"), ("optimizer.weight_decay", 0.5), ("dataset", "cifar10"),
])
def test_a_change_that_alters_the_saved_state_is_refused_naming_both_values(tmp_path, key, value):
    run_config.save_config(load_config("tiny"), str(tmp_path))
    before = saved(tmp_path)
    changed = load_config("tiny")
    *parents, leaf = key.split(".")
    node = changed
    for parent in parents:
        node = node[parent]
    old = node[leaf]
    node[leaf] = value
    with pytest.raises(run_config.ConfigChangedError) as error:
        run_config.save_config(changed, str(tmp_path))
    assert f"config.{key}: {old!r} (saved) -> {value!r} (now)" in str(error.value)
    assert "--allow_config_change" in str(error.value)
    assert saved(tmp_path) == before  # untouched

    run_config.save_config(changed, str(tmp_path), allow_change=True)
    assert saved(tmp_path) != before


def test_logging_and_checkpoint_cadence_may_change(tmp_path):
    run_config.save_config(load_config("tiny"), str(tmp_path))
    changed = load_config("tiny")
    changed.log_every_steps, changed.checkpoint_every_steps, changed.jit_compile = 7, 3, False
    run_config.save_config(changed, str(tmp_path))
    assert saved(tmp_path)["log_every_steps"] == 7


@pytest.mark.parametrize("content", ["", "{\"batch_size\": "])
def test_an_unreadable_config_json_is_replaced_with_a_warning(tmp_path, capsys, content):
    (tmp_path / "config.json").write_text(content)
    run_config.save_config(load_config("tiny"), str(tmp_path))
    assert "does not read as JSON" in capsys.readouterr().err
    assert saved(tmp_path)["batch_size"] == load_config("tiny").batch_size


def test_a_key_new_since_the_saved_config_counts_as_unchanged_at_its_default(tmp_path):
    run_config.save_config(load_config("tiny"), str(tmp_path))
    older = saved(tmp_path)
    del older["max_image_pixels"]  # a config.json written before the key existed
    (tmp_path / "config.json").write_text(json.dumps(older))
    run_config.save_config(load_config("tiny"), str(tmp_path))  # the default: accepted
    (tmp_path / "config.json").write_text(json.dumps(older))
    changed = load_config("tiny")
    changed.max_image_pixels = 1000
    with pytest.raises(run_config.ConfigChangedError, match="max_image_pixels: '<absent>'"):
        run_config.save_config(changed, str(tmp_path))


def _without_online_eval(workdir):
    """Rewrites workdir's config.json as the version before the online probe wrote it."""
    older = saved(workdir)
    del older["online_eval"]
    (workdir / "config.json").write_text(json.dumps(older))


def test_a_run_from_before_the_online_probe_resumes_without_it(tmp_path, capsys):
    labelled = load_config("fashion_mnist_demo", "runlocal")  # "auto": the probe is on
    pretraining.validate(labelled)
    assert labelled.online_eval.probe is True
    run_config.save_config(labelled, str(tmp_path))
    _without_online_eval(tmp_path)
    # Without the adjustment the resolved probe (True) is a change from what that run had.
    with pytest.raises(run_config.ConfigChangedError, match="online_eval.probe: '<absent>'"):
        run_config.save_config(labelled, str(tmp_path))
    run_config.keep_what_the_checkpoints_hold(labelled, str(tmp_path))
    assert labelled.online_eval.probe is False
    assert "predates the online probe" in capsys.readouterr().out
    run_config.save_config(labelled, str(tmp_path))  # accepted, and written with the probe off
    assert saved(tmp_path)["online_eval"]["probe"] is False


def test_a_run_that_had_the_probe_keeps_it_and_a_new_run_is_left_alone(tmp_path):
    labelled = load_config("fashion_mnist_demo", "runlocal")
    pretraining.validate(labelled)
    run_config.keep_what_the_checkpoints_hold(labelled, str(tmp_path))  # no config.json yet
    assert labelled.online_eval.probe is True
    run_config.save_config(labelled, str(tmp_path))
    run_config.keep_what_the_checkpoints_hold(labelled, str(tmp_path))
    assert labelled.online_eval.probe is True
