"""Datasets (tfds by name, local folders, offline Fashion-MNIST) and the tf.data input pipelines."""

from keras_vicreg.data.fashion_mnist import prepare_fashion_mnist
from keras_vicreg.data.pipeline import decode_and_crop
from keras_vicreg.data.pipeline import encoded_two_views
from keras_vicreg.data.pipeline import labelled_dataset
from keras_vicreg.data.pipeline import two_view_dataset
from keras_vicreg.data.sources import DATASETS
from keras_vicreg.data.sources import DatasetSpec
from keras_vicreg.data.sources import check_imagenet_manual_dir
from keras_vicreg.data.sources import dataset_spec
from keras_vicreg.data.sources import default_split
from keras_vicreg.data.sources import image_folder
from keras_vicreg.data.sources import is_folder
from keras_vicreg.data.sources import load_builder
from keras_vicreg.data.sources import load_split
