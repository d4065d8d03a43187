"""The photometric half of both views as a Keras layer, for the train step on the accelerator.

With `config.photometric_device = "accelerator"` (`two_view_dataset(...,
photometric_device="accelerator")`) the input pipeline stops after the crop and resize and yields
uint8 crops; `VICReg(..., photometric=PhotometricAugmentation(augmentation))` then flips, jitters,
converts to grayscale, blurs, solarizes and normalises both views at the start of every training
step, with `keras.ops` on any backend (`transforms.keras_photometric`). Each view keeps its own
column of the preset (view a: blur 1.0, solarize 0; view b: blur 0.1, solarize 0.2, for "imagenet").

The random draws come from `keras.random` with the layer's `SeedGenerator`, whose state is one of
the model's non-trainable variables: JAX's stateless step carries it from step to step, and a
checkpoint saves it, so that a resumed run draws as an uninterrupted one. The draws follow the host
path's distributions (`draws`) from another stream: the same distribution of views, not the same
views (tests/test_view_statistics.py).
"""

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from keras_vicreg.data.transforms import keras_photometric
from keras_vicreg.data.transforms import presets


def _augmentation_config(augmentation):
    return {
        "name": augmentation.name,
        "view_a": dataclasses.asdict(augmentation.view_a),
        "view_b": dataclasses.asdict(augmentation.view_b),
    }


def _augmentation_from_config(config):
    if isinstance(config, str):
        return presets.get_augmentation(config)
    views = {
        key: presets.ViewAugmentation(
            **{name: tuple(v) if isinstance(v, list) else v for name, v in config[key].items()}
        )
        for key in ("view_a", "view_b")
    }
    return presets.TwoViewAugmentation(name=config["name"], **views)


@keras.saving.register_keras_serializable(package="keras_vicreg")
class PhotometricAugmentation(keras.layers.Layer):
    """Flip, colour jitter, grayscale, blur, solarize and normalise of both views, per image.

    Called on a pair `(crops_a, crops_b)` of uint8 (0..255) or float ([0, 1]) batches of the
    views' size. Training: each image of each view takes its own random choices, drawn from the
    view's `ViewAugmentation`. Not training: normalisation only (what `evaluate` and `predict` of
    such crops need). The output is float32 whatever the dtype policy: the backbone casts it.

    Args:
        augmentation: a preset name or a `TwoViewAugmentation`, the same as the pipeline's.
        seed: seeds the layer's `keras.random.SeedGenerator`; None draws one.
        **kwargs: passed to `keras.layers.Layer` (e.g. `name`).
    """

    def __init__(self, augmentation, seed=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if isinstance(augmentation, dict):
            augmentation = _augmentation_from_config(augmentation)
        self.augmentation = presets.get_augmentation(augmentation)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="photometric_seed")
        self.built = True

    @property
    def views(self):
        """The (view a, view b) `ViewAugmentation`s."""
        return self.augmentation.view_a, self.augmentation.view_b

    def draw(self, batch_size):
        """The `ViewParams` of both views for a batch: `(params_a, params_b)`.

        Advances the seed generator; the tests read the draws from here. Under several replicas
        (a TensorFlow strategy) or processes (torch.distributed), which all hold the same seed
        state, the uniforms of the whole global batch are drawn and each replica takes its own
        rows, so that no two replicas augment alike.
        """
        index, count = _replica_slot()
        shape = (2, count * batch_size, keras_photometric.VIEW_UNIFORMS)
        uniforms = keras.random.uniform(shape, seed=self.seed_generator)
        if count > 1:
            uniforms = ops.slice(uniforms, (0, index * batch_size, 0),
                                 (2, batch_size, keras_photometric.VIEW_UNIFORMS))
        return tuple(
            keras_photometric.view_params(uniforms[index], view)
            for index, view in enumerate(self.views)
        )

    def apply(self, crops, params):
        """Both views of `crops` under given `params` (from `draw`, or the host's draws)."""
        return tuple(
            keras_photometric.apply_view_params(images, view_params, view)
            for images, view_params, view in zip(crops, params, self.views)
        )

    def call(self, crops, training=False):
        crops = tuple(crops)
        if len(crops) != 2:
            raise ValueError(
                "PhotometricAugmentation takes a pair of batches (crops_a, crops_b). "
                f"Received: {len(crops)} inputs"
            )
        if not training:
            return tuple(
                keras_photometric.normalize(keras_photometric.to_float(images), view.mean, view.std)
                for images, view in zip(crops, self.views)
            )
        return self.apply(crops, self.draw(ops.shape(crops[0])[0]))

    # Keras saves a layer's weights, not its seed generators' state: saved here, so that a
    # checkpoint holds it and a resumed run draws what an uninterrupted one draws.
    def save_own_variables(self, store):
        store["seed_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        self.seed_generator.state.assign(store["seed_state"])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(augmentation=_augmentation_config(self.augmentation), seed=self.seed)
        return config


def _replica_slot():
    """(this replica's index, the number of replicas) of the running step.

    A TensorFlow strategy's replica context, or torch.distributed's rank and world size; (0, 1)
    elsewhere, JAX included, whose one program draws over the global batch.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            return context.replica_id_in_sync_group, context.num_replicas_in_sync
    elif backend == "torch":
        import torch.distributed  # only where torch is the backend: it need not be installed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def check_photometric(photometric):
    """`VICReg`'s `photometric` argument, checked: None or a `PhotometricAugmentation`."""
    if photometric is None:
        return None
    if not isinstance(photometric, PhotometricAugmentation):
        raise ValueError(
            "`photometric` must be a keras_vicreg.models.PhotometricAugmentation or None. "
            f"Received: photometric={photometric!r}"
        )
    return photometric
