"""The VICReg model: a backbone and an expander trained with the VICReg loss on pairs of views."""

import keras
from keras import ops

from keras_vicreg import losses
from keras_vicreg import train_steps
from keras_vicreg.expander import build_expander

_TERMS = ("loss", "invariance", "variance", "covariance", "std")


@keras.saving.register_keras_serializable(package="keras_vicreg")
class VICReg(keras.Model):
    """VICReg (Bardes, Ponce and LeCun, ICLR 2022) as a `keras.Model`.

    `fit` takes a dataset of pairs `(view_a, view_b)` of image batches; `train_step` embeds both views
    (backbone -> expander) and minimises `vicreg_loss`. Calling the model, or `predict`, returns the
    backbone's pooled representation, which is what linear evaluation and transfer use.

    Args:
        backbone: a `keras.Model` (or layer) mapping images to a feature vector or a feature map; a
            4-D feature map is globally average-pooled. See `keras_vicreg.backbones.resnet`.
        expander: a spec string such as "8192-8192-8192" (see `build_expander`), or a Keras layer.
        sim_coeff, std_coeff, cov_coeff, gamma, eps, covariance: the loss options of `vicreg_loss`.
        expander_batch_norm: BatchNormalization in the hidden layers of a spec-string expander.
        sync_batch_norm: synchronise the expander's BatchNormalization across replicas.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
        >>> backbone = keras_vicreg.backbones.resnet(18, stem="small", input_shape=(32, 32, 3))
        >>> model = keras_vicreg.VICReg(backbone, expander="2048-2048-2048")
        >>> model.compile(optimizer=keras_vicreg.optimizers.LARS(0.3))
        >>> model.fit(pairs, epochs=10)  # pairs yields (view_a, view_b)
        >>> features = model.predict(images)
    """

    def __init__(
        self,
        backbone,
        expander="8192-8192-8192",
        *,
        sim_coeff=25.0,
        std_coeff=25.0,
        cov_coeff=1.0,
        gamma=1.0,
        eps=1e-4,
        covariance="auto",
        expander_batch_norm=True,
        sync_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                "`backbone` must be a keras.Model or keras layer mapping images to features. "
                f"Received: backbone={backbone!r}"
            )
        for arg, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff),
                           ("cov_coeff", cov_coeff), ("eps", eps)):
            if value < 0:
                raise ValueError(f"`{arg}` must be non-negative. Received: {arg}={value}")
        losses.resolve_covariance_method(covariance, None, 0)
        self.backbone = backbone
        self.expander_spec = expander if isinstance(expander, str) else None
        self.expander = (
            build_expander(expander, batch_norm=expander_batch_norm, synchronized=sync_batch_norm)
            if isinstance(expander, str)
            else expander
        )
        self.loss_options = dict(
            sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff,
            gamma=gamma, eps=eps, covariance=covariance,
        )
        self.expander_batch_norm = expander_batch_norm
        self.sync_batch_norm = sync_batch_norm
        self._pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in _TERMS}
        backbone_input = getattr(backbone, "inputs", None)
        if backbone_input:
            self.build(tuple(backbone_input[0].shape))

    # ----------------------------------------------------------------------------------------------
    # Forward passes.

    def build(self, input_shape):
        if isinstance(input_shape, (tuple, list)) and input_shape and isinstance(
            input_shape[0], (tuple, list)
        ):
            input_shape = input_shape[0]  # a pair of views: both have the same shape
        if not self.backbone.built:
            self.backbone.build(input_shape)
        features_shape = self.backbone.compute_output_shape(input_shape)
        if len(features_shape) == 4:
            features_shape = self._pool.compute_output_shape(features_shape)
        if len(features_shape) != 2:
            raise ValueError(
                "The backbone must map images to a feature vector (batch, d) or a feature map "
                f"(batch, h, w, d). Received: backbone output shape {features_shape}"
            )
        if not self.expander.built:
            self.expander.build(features_shape)
        self.built = True

    def call(self, images, training=False):
        """The backbone's pooled representation of a batch of images."""
        features = self.backbone(images, training=training)
        if len(features.shape) == 4:
            features = self._pool(features)
        return features

    def embed(self, images, training=False):
        """The expander's embedding of a batch of images: what the loss sees."""
        return self.expander(self(images, training=training), training=training)

    def gather_embeddings(self, z):
        """Hook for distribution: returns the embeddings of the global batch (identity here)."""
        return z

    def compute_terms(self, data, training=False):
        """The loss terms and the embeddings' std for a pair of views; backend-neutral."""
        view_a, view_b = unpack_views(data)
        z_a = self.gather_embeddings(self.embed(view_a, training=training))
        z_b = self.gather_embeddings(self.embed(view_b, training=training))
        terms = losses.vicreg_loss(z_a, z_b, **self.loss_options)
        terms["std"] = (losses.embedding_std(z_a) + losses.embedding_std(z_b)) / 2.0
        return terms

    # ----------------------------------------------------------------------------------------------
    # Training: one thin step per backend (keras_vicreg.train_steps), all built on compute_terms.

    def train_step(self, *args):
        return train_steps.backend_steps().train_step(self, *args)

    def test_step(self, *args):
        return train_steps.backend_steps().test_step(self, *args)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def update_trackers(self, terms):
        """Adds a step's terms to the metrics shown by `fit` and returns the running means."""
        for name, tracker in self._trackers.items():
            tracker.update_state(ops.stop_gradient(terms[name]))
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    # ----------------------------------------------------------------------------------------------
    # Serialisation.

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            expander=self.expander_spec
            or keras.saving.serialize_keras_object(self.expander),
            expander_batch_norm=self.expander_batch_norm,
            sync_batch_norm=self.sync_batch_norm,
            **self.loss_options,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if not isinstance(config["expander"], str):
            config["expander"] = keras.saving.deserialize_keras_object(config["expander"])
        return cls(**config)


def unpack_views(data):
    """Returns (view_a, view_b) from a batch of pairs, with a clear error for anything else."""
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]  # Keras wraps x alone as (x,)
    if isinstance(data, dict) and {"view_a", "view_b"} <= set(data):
        return data["view_a"], data["view_b"]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise ValueError(
        "VICReg trains on pairs of views: give `fit` a dataset of (view_a, view_b) batches "
        "(see keras_vicreg.data). Received: a batch of structure "
        f"{keras.tree.map_structure(lambda t: tuple(getattr(t, 'shape', ())), data)}"
    )
