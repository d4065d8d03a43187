"""Evaluation protocols of a pretrained backbone: linear, fine-tuning, kNN, retrieval, SVMs."""

from keras_vicreg.evaluation.finetune import finetune  # noqa: F401
from keras_vicreg.evaluation.finetune import finetune_classifier  # noqa: F401
from keras_vicreg.evaluation.knn import KNNMonitor  # noqa: F401
from keras_vicreg.evaluation.knn import knn_accuracy  # noqa: F401
from keras_vicreg.evaluation.knn import knn_scores  # noqa: F401
from keras_vicreg.evaluation.linear import FrozenBackbone  # noqa: F401
from keras_vicreg.evaluation.linear import extract_features  # noqa: F401
from keras_vicreg.evaluation.linear import linear_classifier  # noqa: F401
from keras_vicreg.evaluation.linear import linear_evaluation  # noqa: F401
from keras_vicreg.evaluation.linear import linear_evaluation_on_features  # noqa: F401
from keras_vicreg.evaluation.linear import mean_average_precision  # noqa: F401
from keras_vicreg.evaluation.retrieval import caption_retrieval_recall  # noqa: F401
from keras_vicreg.evaluation.retrieval import retrieval_recall  # noqa: F401
from keras_vicreg.evaluation.sgd import GroupSGD  # noqa: F401
from keras_vicreg.evaluation.svm import average_precision  # noqa: F401
from keras_vicreg.evaluation.svm import score_svms  # noqa: F401
from keras_vicreg.evaluation.svm import svm_protocol  # noqa: F401
from keras_vicreg.evaluation.svm import train_svms  # noqa: F401
