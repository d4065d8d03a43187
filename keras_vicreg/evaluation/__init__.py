from keras_vicreg.evaluation.retrieval import retrieval_recall  # noqa: F401
