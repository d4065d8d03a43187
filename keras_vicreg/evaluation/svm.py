"""VISSL's linear-SVM protocol on frozen features: the one behind the paper's VOC07 number (86.6).

Per class, linear SVMs (scikit-learn's `LinearSVC`: squared hinge, L2 penalty, dual, tol 1e-4,
2000 iterations, positives weighted 2 against 1) on L2-normalised features, for each cost of a
list; the cost with the best mean `average_precision` over a 3-fold cross-validation of the
training set is kept (the first on ties), and the SVM trained on the whole set at that cost scores
the test set. The mAP is the mean over classes of the test APs.

Targets follow VISSL's VOC files, a (count, classes) matrix: 1 the class is present, 0 absent, -1
"difficult" only (VOC's ImageSets mark an image 0 for a class whose every object is difficult).
As in VISSL, training treats -1 as negative, and testing leaves those images out of that class.

Test AP: VISSL's (`vissl/utils/svm_utils/evaluate.py`) is the area under the precision-recall
curve with precision made non-increasing, over every recall step ("all_points", VOC 2010 and
later); the VOC 2007 devkit's is the mean of the interpolated precision at recall 0, 0.1, ..., 1
("11_point"). The paper's number is VISSL's, so "all_points" is the default. scikit-learn's
`average_precision_score` (used for the cross-validation, as VISSL does) does not interpolate.

Deviations from VISSL: VISSL's ResNet VOC07 config evaluates several layers (res5 average-pooled
to 2 x 2, 8192 features); here the backbone's globally pooled features (2048 for ResNet-50) are the
input. The SVMs are seeded (`make_svm`). Ties between scores are ranked by scikit-learn's
precision-recall curve (one threshold per distinct score) where VISSL ranks tied images by index.
"""

import dataclasses
import warnings

import numpy as np
from joblib import Parallel
from joblib import delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC

# VISSL's configs/config/benchmark/linear_image_classification/voc07/*_svm.yaml costs_list.
VISSL_VOC07_COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)
PRESENT, ABSENT, IGNORED = 1, 0, -1
AP_METHODS = ("all_points", "11_point")


@dataclasses.dataclass
class SVMs:
    """The trained per-class SVMs.

    Args:
        models: one fitted `LinearSVC` per class, at its chosen cost.
        costs: the chosen cost of each class.
        cv_ap: (classes, costs) mean cross-validation AP of each cost.
        unconverged: how many fits stopped at `max_iter` (scikit-learn's ConvergenceWarning).
    """

    models: list
    costs: np.ndarray
    cv_ap: np.ndarray
    unconverged: int = 0


def l2_normalise(features):
    """Rows over their L2 norm plus 1e-5, in float64, as VISSL's `_normalize_features`."""
    features = np.asarray(features, dtype=np.float64)
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-5)


def make_svm(cost, max_iter=2000):
    """VISSL's `LinearSVC` for one class and one cost (labels -1 / 1, positives weighted 2).

    `random_state=0`: liblinear's dual solver visits the samples in a random order, so unseeded
    fits (VISSL's) differ in the last digits from run to run; seeded, the protocol repeats.
    """
    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0,
                     penalty="l2", loss="squared_hinge", tol=1e-4, dual=True, max_iter=max_iter,
                     random_state=0)


def average_precision(targets, scores, method="all_points"):
    """The AP of one class's scores; `targets`: 1 positive, 0 negative, -1 left out.

    Args:
        targets: (count,) of 1 / 0 / -1 (-1: VOC's difficult images, not counted).
        scores: (count,) decision values, higher for the class.
        method: "all_points" (VISSL's, VOC 2010+) or "11_point" (the VOC 2007 devkit's).

    Returns:
        A float in [0, 1]; 0 when the class has no positive.
    """
    if method not in AP_METHODS:
        raise ValueError(f"`method` must be one of {AP_METHODS}. Received: method={method!r}")
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape or targets.ndim != 1:
        raise ValueError("`targets` and `scores` must be 1-D and of one length. Received: "
                         f"shapes {targets.shape} and {scores.shape}")
    kept = targets != IGNORED
    positives = targets[kept] == PRESENT
    if not positives.any():
        return 0.0
    precision, recall, _ = precision_recall_curve(positives, scores[kept])
    # One point per distinct score, by rising recall, without scikit-learn's appended (0, 1).
    precision, recall = precision[-2::-1], recall[-2::-1]
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at recall >= r
    if method == "11_point":
        at = np.searchsorted(recall, np.arange(11) / 10.0, side="left")
        return float(np.mean([best_after[i] if i < len(recall) else 0.0 for i in at]))
    steps = np.diff(recall, prepend=0.0)
    return float(np.sum(steps * best_after))


def cross_validated_ap(features, labels, costs, folds=3, max_iter=2000):
    """Mean `average_precision` of a `folds`-fold cross-validation, for each cost.

    Args:
        features: (count, d) normalised features.
        labels: (count,) of -1 / 1.
        costs, folds, max_iter: the costs to try, the folds (scikit-learn's unshuffled
            `StratifiedKFold`, as `cross_val_score(cv=folds)` in VISSL), `LinearSVC`'s limit.

    Returns:
        (len(costs),) float64.
    """
    return np.array([
        cross_val_score(make_svm(cost, max_iter), features, labels, cv=folds,
                        scoring="average_precision").mean()
        for cost in costs
    ])


def _train_class(features, targets, costs, folds, max_iter):
    labels = np.where(targets == PRESENT, 1, -1)  # VISSL: 0 -> -1, and -1 stays -1 (negative)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        cv_ap = cross_validated_ap(features, labels, costs, folds, max_iter)
        cost = costs[int(np.argmax(cv_ap))]
        model = make_svm(cost, max_iter).fit(features, labels)
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, cost, cv_ap, unconverged


def train_svms(features, targets, *, costs=VISSL_VOC07_COSTS, folds=3, normalise=True,
               max_iter=2000, n_jobs=None):
    """One SVM per class, its cost chosen by cross-validation (VISSL's `SVMTrainer.train`).

    Args:
        features: (count, d) features of the training images.
        targets: (count, classes) of 1 / 0 / -1 (see the module docstring).
        costs: the costs to try (VISSL's VOC07 list by default).
        folds: the cross-validation folds (3 in VISSL).
        normalise: L2-normalise the features first (VISSL: yes).
        max_iter: `LinearSVC`'s iteration limit.
        n_jobs: classes trained in parallel (joblib; None: one at a time).

    Returns:
        An `SVMs`.
    """
    features, targets = _check(features, targets)
    costs = tuple(float(cost) for cost in costs)
    if not costs or min(costs) <= 0:
        raise ValueError(f"`costs` must be positive numbers. Received: costs={costs}")
    few = [c for c in range(targets.shape[1])
           if min((targets[:, c] == PRESENT).sum(), (targets[:, c] != PRESENT).sum()) < folds]
    if few:
        raise ValueError(
            f"Every class needs at least `folds`={folds} positive and negative training images "
            f"for the cross-validation; classes {few} have fewer. Received: {len(targets)} images"
        )
    features = l2_normalise(features) if normalise else features
    fits = Parallel(n_jobs=n_jobs)(
        delayed(_train_class)(features, targets[:, c], costs, folds, max_iter)
        for c in range(targets.shape[1])
    )
    models, chosen, cv_ap, unconverged = zip(*fits)
    return SVMs(list(models), np.array(chosen), np.stack(cv_ap), int(sum(unconverged)))


def score_svms(svms, features, targets, *, method="all_points", normalise=True):
    """The test AP of each class's SVM and their mean (VISSL's `SVMTrainer.test`).

    Returns:
        dict(map=..., aps=[per class]).
    """
    features, targets = _check(features, targets)
    if targets.shape[1] != len(svms.models):
        raise ValueError(f"`targets` has {targets.shape[1]} classes, the SVMs "
                         f"{len(svms.models)}. Received: targets.shape={targets.shape}")
    features = l2_normalise(features) if normalise else features
    aps = [average_precision(targets[:, c], model.decision_function(features), method)
           for c, model in enumerate(svms.models)]
    return dict(map=float(np.mean(aps)), aps=[float(ap) for ap in aps])


def svm_protocol(train_features, train_targets, test_features, test_targets, *,
                 class_names=None, costs=VISSL_VOC07_COSTS, folds=3, method="all_points",
                 max_iter=2000, n_jobs=None):
    """`train_svms` then `score_svms`: the numbers the binaries write.

    Returns:
        dict(map, ap (class name -> AP), cost (class name -> chosen cost), cv_ap, unconverged,
        ap_method, costs, folds).
    """
    if method not in AP_METHODS:
        raise ValueError(f"`method` must be one of {AP_METHODS}. Received: method={method!r}")
    svms = train_svms(train_features, train_targets, costs=costs, folds=folds,
                      max_iter=max_iter, n_jobs=n_jobs)
    scores = score_svms(svms, test_features, test_targets, method=method)
    names = list(class_names or [str(c) for c in range(len(svms.models))])
    return dict(
        map=scores["map"],
        ap=dict(zip(names, scores["aps"])),
        cost=dict(zip(names, (float(c) for c in svms.costs))),
        cv_ap=dict(zip(names, (row.tolist() for row in svms.cv_ap))),
        unconverged=svms.unconverged,
        ap_method=method,
        costs=[float(c) for c in costs],
        folds=folds,
    )


def _check(features, targets):
    features, targets = np.asarray(features), np.asarray(targets)
    if features.ndim != 2 or targets.ndim != 2 or len(features) != len(targets):
        raise ValueError(
            "`features` must be (count, d) and `targets` (count, classes). Received: shapes "
            f"{features.shape} and {targets.shape}"
        )
    if not np.isin(targets, (PRESENT, ABSENT, IGNORED)).all():
        raise ValueError("`targets` must hold 1 (present), 0 (absent) or -1 (difficult only). "
                         f"Received: values {np.unique(targets)[:10].tolist()}")
    return features, targets.astype(np.int64)
