"""Datasets (tfds by name, local folders, offline Fashion-MNIST) and the tf.data input pipelines.

`two_view_dataset` (pretraining.py) makes the pairs of views of pretraining, `labelled_dataset`
(labelled.py) the labelled images of every evaluation and of the export's preprocessing.
"""

from keras_vicreg.data.decode import decode_and_crop
from keras_vicreg.data.fashion_mnist import prepare_fashion_mnist
from keras_vicreg.data.labelled import centre_crop_preprocess
from keras_vicreg.data.labelled import labelled_dataset
from keras_vicreg.data.labelled import labelled_view
from keras_vicreg.data.labels import LabelSpec
from keras_vicreg.data.labels import label_spec
from keras_vicreg.data.labels import load_labelled
from keras_vicreg.data.pretraining import encoded_two_views
from keras_vicreg.data.pretraining import two_view_dataset
from keras_vicreg.data.sources import DATASETS
from keras_vicreg.data.sources import DatasetSpec
from keras_vicreg.data.sources import check_imagenet_manual_dir
from keras_vicreg.data.sources import dataset_spec
from keras_vicreg.data.sources import default_split
from keras_vicreg.data.sources import image_folder
from keras_vicreg.data.sources import is_folder
from keras_vicreg.data.sources import load_builder
from keras_vicreg.data.sources import load_split
