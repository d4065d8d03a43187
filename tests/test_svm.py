"""Tests for keras_vicreg.evaluation.svm and voc07: VISSL's VOC07 SVM protocol.

References: brute-force APs written from their definitions (a loop over every cut-off of the
ranking), scikit-learn's `average_precision_score` where the two should agree or differ, and
scikit-learn's `GridSearchCV` over the same costs for the chosen cost.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from configs import voc07_svm
from keras_vicreg.data.synthetic import synthetic_multilabel
from keras_vicreg.evaluation import svm
from keras_vicreg.evaluation import voc07

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cutoffs(targets, scores):
    """(precision, recall) at every cut-off k of the descending ranking, difficult ones dropped."""
    kept = targets != -1
    order = np.argsort(-scores[kept], kind="stable")
    hits = (targets[kept] == 1)[order].astype(float)
    true_positives = np.cumsum(hits)
    return true_positives / np.arange(1, len(hits) + 1), true_positives / hits.sum(), hits


def _brute_11_point(targets, scores):
    precision, recall, _ = _cutoffs(targets, scores)
    total = 0.0
    for level in range(11):
        reached = [p for p, r in zip(precision, recall) if r >= level / 10]
        total += max(reached) if reached else 0.0
    return total / 11


def _brute_all_points(targets, scores):
    precision, _, hits = _cutoffs(targets, scores)
    positives = hits.sum()
    return sum(max(precision[k:]) / positives for k in range(len(hits)) if hits[k])


def _random_case(rng, count=60):
    targets = rng.choice([1, 0, 0, -1], size=count)
    targets[0] = 1
    scores = rng.normal(size=count) + 0.8 * (targets == 1)
    return targets, scores


@pytest.mark.backend_neutral
@pytest.mark.parametrize("seed", range(5))
def test_average_precisions_equal_brute_force_definitions(seed):
    targets, scores = _random_case(np.random.default_rng(seed))
    assert svm.average_precision(targets, scores, "11_point") == pytest.approx(
        _brute_11_point(targets, scores), abs=1e-12)
    assert svm.average_precision(targets, scores, "all_points") == pytest.approx(
        _brute_all_points(targets, scores), abs=1e-12)


@pytest.mark.backend_neutral
def test_average_precisions_against_scikit_learn():
    rng = np.random.default_rng(7)
    for _ in range(5):  # interpolation never lowers the AP; on random rankings it raises it
        targets, scores = _random_case(rng)
        kept = targets != -1
        plain = average_precision_score(targets[kept] == 1, scores[kept])
        assert svm.average_precision(targets, scores) > plain
    # Precision falling at each positive: nothing to interpolate, the two agree (P P N P N N).
    targets, scores = np.array([1, 1, 0, 1, 0, 0]), np.arange(6.0)[::-1]
    assert svm.average_precision(targets, scores) == pytest.approx(
        average_precision_score(targets, scores)) == pytest.approx((1 + 1 + 0.75) / 3)
    # N P P: precision rises from 1/2 to 2/3; interpolated 2/3, scikit-learn (1/2 + 2/3) / 2.
    targets, scores = np.array([0, 1, 1]), np.array([3.0, 2.0, 1.0])
    assert svm.average_precision(targets, scores) == pytest.approx(2 / 3)
    assert average_precision_score(targets, scores) == pytest.approx(7 / 12)
    assert svm.average_precision(targets, scores, "11_point") == pytest.approx(2 / 3)


def _generated_features(seed, count=90, classes=3, width=12):
    rng = np.random.default_rng(seed)
    targets = rng.choice([1, 0, 0, -1], size=(count, classes), p=[0.3, 0.5, 0.1, 0.1])
    directions = np.random.default_rng(100).normal(size=(classes, width))  # one task
    features = rng.normal(size=(count, width)) + 0.7 * (targets == 1) @ directions
    return features, targets


@pytest.mark.backend_neutral
def test_chosen_cost_equals_a_grid_search():
    features, targets = _generated_features(0)
    costs = (0.01, 0.1, 1.0, 10.0, 100.0)
    svms = svm.train_svms(features, targets, costs=costs)
    normalised = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-5)
    for cls in range(targets.shape[1]):
        labels = np.where(targets[:, cls] == 1, 1, -1)  # difficult ones are negatives (VISSL)
        search = GridSearchCV(
            LinearSVC(class_weight={1: 2, -1: 1}, loss="squared_hinge", dual=True, tol=1e-4,
                      max_iter=2000, random_state=0),
            {"C": list(costs)}, cv=StratifiedKFold(3), scoring="average_precision",
        ).fit(normalised, labels)
        np.testing.assert_allclose(svms.cv_ap[cls], search.cv_results_["mean_test_score"],
                                   atol=1e-9)
        assert svms.costs[cls] == search.best_params_["C"]
        np.testing.assert_allclose(svms.models[cls].coef_, search.best_estimator_.coef_,
                                   atol=1e-9)
    assert len(set(np.round(svms.cv_ap.ravel(), 6))) > 3  # the costs do differ


@pytest.mark.backend_neutral
def test_difficult_images_are_left_out_of_the_test_ap_only():
    features, targets = _generated_features(1)
    as_negatives = np.where(targets == -1, 0, targets)
    trained = svm.train_svms(features, targets, costs=(0.1, 1.0))
    plain = svm.train_svms(features, as_negatives, costs=(0.1, 1.0))
    for a, b in zip(trained.models, plain.models):
        np.testing.assert_array_equal(a.coef_, b.coef_)
    test_features, test_targets = _generated_features(2)
    scores = svm.score_svms(trained, test_features, test_targets)
    normalised = svm.l2_normalise(test_features)
    for cls, model in enumerate(trained.models):
        kept = test_targets[:, cls] != -1
        expected = svm.average_precision(test_targets[kept, cls],
                                         model.decision_function(normalised[kept]))
        assert scores["aps"][cls] == pytest.approx(expected)
    assert scores["map"] == pytest.approx(np.mean(scores["aps"]))
    assert scores["map"] > 0.6


@pytest.mark.backend_neutral
def test_bad_inputs_are_refused_with_what_to_change():
    features, targets = _generated_features(0, count=30)
    with pytest.raises(ValueError, match=r"1 \(present\), 0 \(absent\) or -1"):
        svm.train_svms(features, targets + 2)
    few = targets.copy()
    few[:, 1] = 0
    few[:2, 1] = 1
    with pytest.raises(ValueError, match=r"classes \[1\] have fewer"):
        svm.train_svms(features, few)
    with pytest.raises(ValueError, match="`method` must be one of"):
        svm.average_precision([1, 0], [1.0, 0.0], method="voc12")


@pytest.mark.backend_neutral
def test_voc_targets_follow_vissl_on_tfds_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        dataset, names = voc07.tfds_split("voc/2007", "test")
        raw = tfds.load("voc/2007", split="test")
        for element, original in zip(dataset, raw):
            every = set(original["labels"].numpy().tolist())
            easy = set(original["labels_no_difficult"].numpy().tolist())
            expected = [1 if c in easy else -1 if c in every else 0 for c in range(20)]
            assert element["svm_targets"].numpy().tolist() == expected
    assert len(names) == 20 and names[0] == "aeroplane"


@pytest.mark.backend_neutral
def test_run_reads_a_saved_backbone_and_beats_chance(tmp_path):
    config = voc07_svm.get_config("runlocal")
    backbone = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
    ])
    backbone.save(tmp_path / "backbone.keras")
    config.backbone = str(tmp_path / "backbone.keras")
    record = voc07.run_svm_eval(config, workdir=str(tmp_path / "work"))
    written = json.loads((tmp_path / "work" / "results.json").read_text())
    assert written["map"] == pytest.approx(record["map"])
    assert set(written["ap"]) == {f"class{c}" for c in range(6)}
    _, test_targets = synthetic_multilabel(60, 32, 6, seed=1)
    chance = np.mean([(test_targets[:, c] == 1).mean() for c in range(6)])
    assert written["map"] > chance + 0.2


def test_config_errors_come_before_any_work(tmp_path):
    config = voc07_svm.get_config()
    with pytest.raises(ValueError, match="Set `config.backbone`"):
        voc07.run_svm_eval(config, workdir=str(tmp_path))
    config.backbone, config.ap_method = str(tmp_path / "missing.keras"), "11_point"
    with pytest.raises(ValueError, match="does not exist"):
        voc07.run_svm_eval(config, workdir=str(tmp_path))
    config.ap_method = "voc12"
    with pytest.raises(ValueError, match="`ap_method` must be one of"):
        voc07.run_svm_eval(config, workdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="one backend is enough for the binary; the library is backend_neutral")
def test_binary_runlocal_writes_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-m", "trainers.svm_eval", "--config=configs/voc07_svm.py:runlocal",
         f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.5 < results["map"] <= 1.0 and len(results["ap"]) == 6
    assert set(results["cost"].values()) <= {0.1, 1.0, 10.0}
