"""The pretraining data of a config: each epoch's pairs of views, resumable mid-epoch.

`Data` turns a pretraining config into what `checkpointing.resumable_fit` reads: epoch `e`'s batches
of two views, in an order that is a function of the seed and the epoch alone (`epoch_seed`), so that
a run resumed after a kill sees the very batches an uninterrupted run sees. The images come from
tfds (read and decoded every epoch, or decoded once into memory with `config.in_memory`), a folder
of class subfolders, or `keras_vicreg.data.synthetic` for smoke tests. Images read and decoded every
epoch are scanned once first (`bad_images.check_source`), so that broken data stops the run before
training rather than shortening its epochs. With the online probe on (`config.online_eval.probe`)
the batches are `((view_a, view_b), labels)`, the views the same as without labels.
"""

import numpy as np

import keras
from keras_vicreg import data as vicreg_data
from keras_vicreg.config import pretraining
from keras_vicreg.data import transforms
from keras_vicreg.data.synthetic import SYNTHETIC_CLASSES
from keras_vicreg.data.synthetic import synthetic_images
from keras_vicreg.data.synthetic import synthetic_labels
from keras_vicreg.training import bad_images
from keras_vicreg.training import distribute
from keras_vicreg.training import multihost
from keras_vicreg.training import online_eval


def epoch_seed(seed, epoch):
    """The seed of one epoch's data order and views: a function of the run's seed and the epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def config_augmentation(config):
    """The `TwoViewAugmentation` of a config: its preset (or its dataset's) at its image size."""
    name = config.augmentation
    if name is None:
        name = vicreg_data.dataset_spec(config.dataset).augmentation
    return transforms.get_augmentation(name, config.image_size)


class Data:
    """The pretraining data of a config: each epoch's pairs of views, and a fixed batch.

    Opening a tfds dataset checks `config.num_examples` against the split, so that a wrong size is
    an error before training rather than epochs of the wrong length; images read and decoded every
    epoch (a folder, or tfds without `config.in_memory`) are scanned for those the pipeline would
    skip (`bad_images.check_source`), listed in `<workdir>/undecodable_images.json`.

    Args:
        config: the pretraining config (validated: `keras_vicreg.config.pretraining.validate`).
        strategy: what `distribute.get_strategy` returned, or None.
        data_dir, manual_dir: tensorflow-datasets' directories.
        workdir: where the scan's list goes (and a passed scan is reused from); None: no file.

    Raises:
        ValueError: the split does not hold `config.num_examples` images, its images do not fit
            `config.in_memory`, or the dataset cannot be found.
        bad_images.UndecodableImagesError: none of the images decodes, too many do not
            (`config.max_undecodable_fraction`), or the others fill fewer than `steps_per_epoch`
            batches.
    """

    def __init__(self, config, strategy, data_dir=None, manual_dir=None, workdir=None):
        self.config = config
        self.strategy = strategy
        self.data_dir, self.manual_dir = data_dir, manual_dir
        self.augmentation = config_augmentation(config)
        self.channels = self.augmentation.view_a.channels
        self.image_scan = None  # the report of `bad_images.check_source`, where it ran
        # With the probe: the labels' key in the source's elements, or an array of them.
        self.probe = online_eval.probe_on(config)
        self.labels, self.num_classes = None, None
        if config.dataset == pretraining.SYNTHETIC:
            images = synthetic_images(
                config.num_examples, config.image_size, self.channels, config.seed
            )
            if self.probe:
                self.labels, self.num_classes = "label", SYNTHETIC_CLASSES
                images = (images, synthetic_labels(images))
            self._source = lambda: _from_tensor_slices(images)
        else:
            builder = self._check_split_size()
            if self.probe:
                self.labels, self.num_classes = "label", _num_classes(builder, config.dataset)
            if config.in_memory:  # an array: two_view_dataset augments whole batches of it
                # One host tensor for every epoch's pipeline, not a copy of the array per epoch.
                images, labels = self._decode_split(builder)
                images = _host_tensor(images)
                if self.probe:
                    self.labels = labels
                self._source = lambda: images
            else:
                dataset, _ = vicreg_data.load_split(
                    config.dataset, self._split(), data_dir=data_dir, manual_dir=manual_dir
                )
                # Process 0 scans and writes the report; the others then read its passed scan
                # from a shared workdir (or scan for themselves where the workdir is theirs).
                scan = (config, dataset, self._split(), self.channels, workdir)
                self.image_scan = multihost.on_writer(bad_images.check_source, *scan)
                if not multihost.is_writer():
                    self.image_scan = bad_images.check_source(*scan)
                self._source = lambda: config.dataset

    def _split(self):
        return self.config.split or vicreg_data.dataset_spec(self.config.dataset).pretrain_split

    def _check_split_size(self):
        """Checks `num_examples` against the split; returns the dataset's tfds builder."""
        dataset, split = self.config.dataset, self._split()
        if vicreg_data.sources.is_folder(dataset):
            builder = vicreg_data.image_folder(dataset)
        else:
            builder = vicreg_data.load_builder(
                dataset, data_dir=self.data_dir, manual_dir=self.manual_dir
            )
        size = builder.info.splits[split].num_examples
        if size != self.config.num_examples:
            raise ValueError(
                f"config.num_examples must be the number of images of {dataset!r} split "
                f"{split!r}, {size}: set --config.num_examples={size}. "
                f"Received: config.num_examples={self.config.num_examples}"
            )
        return builder

    def _decode_split(self, builder):
        """The split's images decoded into one uint8 array (`config.in_memory`), and its labels
        (None where it has none)."""
        import tensorflow_datasets as tfds

        shape = builder.info.features["image"].shape
        if None in shape:
            raise ValueError(
                "config.in_memory keeps the decoded images in one array, which needs images of "
                f"one size; {self.config.dataset!r} has images of shape {shape}: set "
                f"--config.in_memory=False. Received: config.in_memory=True"
            )
        size = self.config.num_examples * int(np.prod(shape))
        print(f"Decoding {self.config.num_examples} images of {self.config.dataset!r} into "
              f"memory ({size / 2**20:.0f} MiB).", flush=True)
        split = builder.as_dataset(split=self._split(), batch_size=-1)
        labels = tfds.as_numpy(split["label"]) if "label" in split else None
        return tfds.as_numpy(split["image"]), labels

    def _pipeline(self, epoch, batch_size, input_context=None, labelled=True, device=None):
        config = self.config
        return vicreg_data.two_view_dataset(
            self._source(),
            batch_size,
            augmentation=self.augmentation,
            split=config.split,
            seed=epoch_seed(config.seed, epoch),
            shuffle_buffer=config.shuffle_buffer,
            input_context=input_context,
            data_dir=self.data_dir,
            manual_dir=self.manual_dir,
            download=True,
            max_image_pixels=config.max_image_pixels,
            labels=self.labels if labelled else None,
            photometric_device=device or config.photometric_device,
        )

    def epoch(self, epoch, skip=0):
        """Epoch `epoch`'s batches of pairs (with labels: of `(pair, labels)`), in a fixed order,
        without the first `skip`."""
        if keras.backend.backend() != "tensorflow" or distribute.num_replicas(self.strategy) == 1:
            # JAX's DataParallel splits each process's batch over its devices; several processes
            # (JAX, PyTorch) each read their own shard.
            context = multihost.input_context()
            return self._pipeline(epoch, self.config.batch_size, context).skip(skip)
        return self.strategy.distribute_datasets_from_function(
            lambda context: self._pipeline(epoch, self.config.batch_size, context).skip(skip)
        )

    def fixed_views(self):
        """The first `summary_examples` pairs of the first epoch, as numpy arrays: augmented
        whole on the host whatever `config.photometric_device` (the summaries show views)."""
        pipeline = self._pipeline(0, self.config.summary_examples, labelled=False, device="host")
        batch = next(iter(pipeline.take(1)), None)
        if batch is None:  # e.g. a tf.data source of images that do not decode
            raise bad_images.UndecodableImagesError(
                f"The first epoch of {self.config.dataset!r} holds no batch of summary_examples "
                "pairs: its images do not decode, or are too few. "
                f"Received: config.summary_examples={self.config.summary_examples}"
            )
        return tuple(np.asarray(view) for view in batch)


def _num_classes(builder, dataset):
    """The number of classes of a tfds builder's (or a folder's) "label" feature."""
    classes = getattr(dict(builder.info.features).get("label"), "num_classes", None)
    if not classes:
        raise ValueError(
            f"The online probe needs class labels, and {dataset!r} has no \"label\" feature of "
            "classes: set --config.online_eval.probe=False. Received: "
            f"config.dataset={dataset!r}, config.online_eval.probe=True"
        )
    return int(classes)


def _host_tensor(array):
    import tensorflow as tf

    with tf.device("CPU:0"):
        return tf.convert_to_tensor(array)


def _from_tensor_slices(images):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(images)
