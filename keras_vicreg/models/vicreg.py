"""The VICReg model: a backbone and an expander trained with the VICReg loss on pairs of views.

The model holds its forward pass, its loss terms and its config. Beside it: `branches` (checking,
copying and feeding the two branches, the momentum encoder), `global_batch` (the loss over every
replica's rows) and `steps` (the thin train step of each backend, which `train_step` dispatches to).
"""

import keras
from keras import ops

from keras_vicreg import losses
from keras_vicreg.models import batch_norm
from keras_vicreg.models import branches
from keras_vicreg.models import global_batch
from keras_vicreg.models import online_probe as probe_lib
from keras_vicreg.models import photometric as photometric_lib
from keras_vicreg.models import serialization
from keras_vicreg.models import steps
from keras_vicreg.models.branches import unpack_views  # noqa: F401  (0.1: keras_vicreg.model)
from keras_vicreg.models.expander import build_expander

_TERMS = ("loss", "invariance", "variance", "covariance", "std")


@keras.saving.register_keras_serializable(package="keras_vicreg")
class VICReg(keras.Model):
    """VICReg (Bardes, Ponce and LeCun, ICLR 2022) as a `keras.Model`.

    `fit` takes a dataset of pairs `(view_a, view_b)`; `train_step` embeds view a through branch a
    (backbone -> expander) and view b through branch b, and minimises `vicreg_loss`. Calling the
    model, or `predict`, returns branch a's pooled representation, which is what linear evaluation
    and transfer use; `branch_a` and `branch_b` are stand-alone models of each branch for export.

    By default the two branches are one network (shared weights, the paper's main setting). Because
    VICReg regularises each branch's embeddings on their own, branch b may instead have its own
    weights, its own architecture, even its own input type (`backbone_b`): the pairs are then
    `(input_a, input_b)` of whatever the two backbones take, e.g. images and token sequences.
    The options `predictor`, `stop_gradient_b`, `momentum` (with BYOL's ramp),
    `expander_batch_norm`, `invariance`, `symmetric` and the three coefficients reproduce the rows
    of the paper's ablation table (docs/reproducing.md, configs/paper_ablations.py).

    Args:
        backbone: branch a's `keras.Model` (or layer) mapping inputs to a feature vector or a
            feature map; a 4-D feature map is globally average-pooled. See
            `keras_vicreg.backbones.resnet`.
        expander: a spec string such as "8192-8192-8192" (see `build_expander`), or a Keras layer.
        backbone_b: branch b's own backbone (weights, architecture and input type of its own): the
            paper's DW and DA settings and its image-text experiment. None (default): branch b is
            branch a, shared weights.
        expander_b: branch b's expander, a spec string or a Keras layer; only with `backbone_b`.
            None: a new expander like `expander`, with its own weights. Its output width must
            match branch a's.
        predictor: a spec string for an MLP applied to branch a's embeddings before the loss (the
            paper's "PR" column, as in BYOL and SimSiam); its last width must be the embedding
            width, e.g. "512-2048" after a "...-2048" expander. Its hidden layers have BatchNorm.
        stop_gradient_b: no gradient flows through branch b's embeddings (the "SG" column, as in
            SimSiam). With shared weights, the network learns from branch a's side only; with a
            separate `backbone_b`, branch b's weights are then left untouched by the loss.
        momentum: the rate m of a momentum (EMA) encoder for branch b (the "ME" column, as in BYOL,
            e.g. 0.99 or 0.996): branch b becomes a copy of branch a (backbone and expander, not the
            predictor) whose weights are non-trainable and follow `b = m * b + (1 - m) * a` after
            every optimizer step; it receives no gradient. Its BatchNorm statistics are its own,
            updated by its forward passes. None (default): no momentum encoder. Not with
            `backbone_b`.
        momentum_ramp_steps: BYOL's cosine ramp of the momentum from `momentum` to 1 over this
            many steps: after step k (from 0), `m = 1 - (1 - momentum) * (cos(pi k / K) + 1) / 2`,
            1 from step K on. The step count is a variable of the model, saved with its weights.
            None (default): the rate stays `momentum`.
        invariance: "mse" (VICReg's) or "cosine" (BYOL's and SimSiam's 2 - 2 cos), see
            `keras_vicreg.losses.vicreg_loss`.
        symmetric: both views through both sides, the loss averaged over the two directions, as
            BYOL and SimSiam do: (predictor(a(x_a)), b(x_b)) and (predictor(a(x_b)), b(x_a)).
            With shared weights the targets are branch a's own embeddings (under stop-gradient
            with `stop_gradient_b`); with `momentum` the momentum encoder's. Not with a
            separate `backbone_b`.
        sim_coeff, std_coeff, cov_coeff, gamma, eps, covariance: the loss options of `vicreg_loss`;
            `std_coeff=0, cov_coeff=0` is invariance only (which collapses: watch the `std`
            metric), `cov_coeff=0` is invariance + variance.
        expander_batch_norm: BatchNormalization in the hidden layers of spec-string expanders (the
            "BN" column).
        sync_batch_norm: synchronise every BatchNormalization across replicas (TensorFlow: the
            backbones', expanders' and predictor's). None (default): when the model is built under
            a TensorFlow strategy of several replicas. True forces it (on JAX and PyTorch, for the
            expanders and predictor only), False leaves every layer as given.
        online_probe: an `OnlineProbe` trained on stop-gradient features of view a, or None;
            the batches are then `((view_a, view_b), labels)` (`models.online_probe`).
        photometric: a `PhotometricAugmentation` applied to both views at the start of every
            training step (flip, jitter, grayscale, blur, solarize, normalise on the accelerator),
            for pipelines that yield crops only (`two_view_dataset(...,
            photometric_device="accelerator")`); None (default): the views arrive augmented.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
        >>> backbone = keras_vicreg.backbones.resnet(18, stem="small", input_shape=(32, 32, 3))
        >>> model = keras_vicreg.VICReg(backbone, expander="2048-2048-2048")
        >>> model.compile(optimizer=keras_vicreg.LARS(0.3))
        >>> model.fit(pairs, epochs=10)  # pairs yields (view_a, view_b)
        >>> features = model.predict(images)
        >>> # Image-text: branch b reads token ids through its own encoder.
        >>> model = keras_vicreg.VICReg(image_encoder, "1024-1024", backbone_b=text_encoder)
        >>> model.fit(image_text_pairs)  # yields (images, token_ids)
        >>> model.branch_b.export("text_encoder")  # TensorFlow backend
    """

    def __init__(
        self,
        backbone,
        expander="8192-8192-8192",
        *,
        backbone_b=None,
        expander_b=None,
        predictor=None,
        stop_gradient_b=False,
        momentum=None,
        momentum_ramp_steps=None,
        sim_coeff=25.0,
        std_coeff=25.0,
        cov_coeff=1.0,
        gamma=1.0,
        eps=1e-4,
        covariance="auto",
        expander_batch_norm=True,
        sync_batch_norm=None,
        invariance="mse",
        symmetric=False,
        online_probe=None,
        photometric=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        branches.check_layer("backbone", backbone)
        if backbone_b is not None:
            branches.check_layer("backbone_b", backbone_b)
        branches.check_options(
            backbone_b=backbone_b, expander_b=expander_b, predictor=predictor,
            momentum=momentum, momentum_ramp_steps=momentum_ramp_steps, symmetric=symmetric,
            invariance=invariance,
        )
        for arg, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff),
                           ("cov_coeff", cov_coeff), ("eps", eps)):
            if value < 0:
                raise ValueError(f"`{arg}` must be non-negative. Received: {arg}={value}")
        losses.resolve_covariance_method(covariance, None, 0)
        self.expander_batch_norm = expander_batch_norm
        self.sync_batch_norm = sync_batch_norm
        self._synchronized = batch_norm.resolve(sync_batch_norm)
        self.backbone = backbone
        self.expander_spec = expander if isinstance(expander, str) else None
        self.expander = self._make_expander(expander, "expander")
        self.expander_b_spec = expander_b if isinstance(expander_b, str) else None
        self._own_expander_b = expander_b is not None
        self.momentum = momentum
        self.momentum_ramp_steps = momentum_ramp_steps
        self.symmetric = symmetric
        if momentum_ramp_steps is not None:
            # The steps taken, for the ramp: saved and restored with the weights.
            self.momentum_step = self.add_weight(
                shape=(), initializer="zeros", dtype="int32", trainable=False,
                name="momentum_step", aggregation="only_first_replica",
            )
        if momentum is not None:
            backbone_b = branches.fresh_copy(backbone, f"{backbone.name}_momentum")
        if backbone_b is not None and expander_b is None:
            expander_b = expander if isinstance(expander, str) else branches.fresh_copy(expander)
        self.backbone_b = backbone_b
        self.expander_b = (
            None if expander_b is None else self._make_expander(expander_b, "expander_b")
        )
        self.predictor_spec = predictor
        self.predictor = (
            None
            if predictor is None
            else build_expander(predictor, synchronized=self._synchronized, name="predictor")
        )
        self.stop_gradient_b = stop_gradient_b
        self.loss_options = dict(
            sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff,
            gamma=gamma, eps=eps, covariance=covariance, invariance=invariance,
        )
        self._pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.photometric = photometric_lib.check_photometric(photometric)
        probe_lib.check_probe(online_probe)
        self.online_probe = online_probe  # its variables are the last of the model's
        terms = _TERMS + (probe_lib.METRICS if online_probe is not None else ())
        self._trackers = {name: keras.metrics.Mean(name=name) for name in terms}
        if self._synchronized and keras.backend.backend() != "jax":
            batch_norm.synchronize(self)  # the backbones' too
        shape_a = branches.declared_input_shape(backbone)
        shape_b = None if backbone_b is None else branches.declared_input_shape(backbone_b)
        if shape_a and (backbone_b is None or shape_b):
            self.build(shape_a if backbone_b is None else (shape_a, shape_b))

    def _make_expander(self, expander, name):
        if isinstance(expander, keras.layers.Layer):
            return expander
        return build_expander(
            expander,
            batch_norm=self.expander_batch_norm,
            synchronized=self._synchronized,
            name=name,
        )

    # ----------------------------------------------------------------------------------------------
    # Forward passes.

    def build(self, input_shape):
        """Builds both branches (and the predictor) from one input shape or a pair of them."""
        shape_a, shape_b = input_shape, None
        if branches.is_shape_pair(input_shape):
            shape_a, shape_b = input_shape  # two views, or branch a's and branch b's inputs
        z_shape = self._build_branch(self.backbone, self.expander, shape_a)
        z_b_shape = z_shape
        if self.backbone_b is not None:
            if shape_b is None:
                shape_b = (
                    shape_a if self.momentum is not None
                    else branches.declared_input_shape(self.backbone_b)
                )
            if shape_b is None:
                raise ValueError(
                    "A model with its own `backbone_b` is built from a pair of input shapes "
                    f"(shape_a, shape_b). Received: input_shape={input_shape}"
                )
            z_b_shape = self._build_branch(self.backbone_b, self.expander_b, shape_b)
        if self.predictor is not None:
            if not self.predictor.built:
                self.predictor.build(z_shape)
            z_shape = self.predictor.compute_output_shape(z_shape)
        if z_shape[-1] != z_b_shape[-1]:
            raise ValueError(
                "Branch a's embeddings (after the predictor, if any) and branch b's must have the "
                "same width: make the last widths of `expander`, `expander_b` and `predictor` "
                f"agree. Received: widths {z_shape[-1]} and {z_b_shape[-1]}"
            )
        if self.momentum is not None:
            branches.init_momentum_encoder(self)
        self.built = True

    def _build_branch(self, backbone, expander, input_shape):
        """Builds a backbone and its expander; returns the embeddings' shape."""
        if not backbone.built:
            backbone.build(input_shape)
        features_shape = backbone.compute_output_shape(input_shape)
        if len(features_shape) == 4:
            features_shape = self._pool.compute_output_shape(features_shape)
        if len(features_shape) != 2:
            raise ValueError(
                "A backbone must map its inputs to a feature vector (batch, d) or a feature map "
                f"(batch, h, w, d). Received: backbone output shape {features_shape}"
            )
        if not expander.built:
            expander.build(features_shape)
        probe = self.online_probe
        if backbone is self.backbone and probe is not None and not probe.built:
            probe.build(features_shape)
        return expander.compute_output_shape(features_shape)

    def _branch(self, branch):
        """The (backbone, expander) of branch "a" or "b"."""
        if branch not in ("a", "b"):
            raise ValueError(f'`branch` must be "a" or "b". Received: branch={branch!r}')
        if branch == "b" and self.backbone_b is not None:
            return self.backbone_b, self.expander_b
        return self.backbone, self.expander

    def _represent(self, backbone, inputs, training):
        features = backbone(inputs, training=training)
        if len(features.shape) == 4:
            features = self._pool(features)
        return features

    def call(self, inputs, training=False):
        """Branch a's pooled representation of a batch of inputs."""
        return self._represent(self.backbone, inputs, training)

    def embed(self, inputs, training=False, branch="a"):
        """A branch's expander embedding of a batch of its inputs: what the loss sees."""
        backbone, expander = self._branch(branch)
        return expander(self._represent(backbone, inputs, training), training=training)

    def branch_model(self, branch="a", embeddings=False):
        """A stand-alone `keras.Model` of one branch, sharing this model's weights.

        Args:
            branch: "a" or "b" (with shared weights, both are the same network).
            embeddings: map inputs to the expander's embeddings (what cross-modal retrieval
                compares) instead of the backbone's pooled representation (what transfer uses).

        Returns:
            A functional `keras.Model` from the backbone's input, ready for `predict`, `save` or,
            on TensorFlow, `export`.
        """
        return branches.branch_model(self, branch, embeddings)

    @property
    def branch_a(self):
        """Branch a as a `keras.Model` from its inputs to its representations."""
        return self.branch_model("a")

    @property
    def branch_b(self):
        """Branch b as a `keras.Model` from its inputs to its representations."""
        return self.branch_model("b")

    def gather_embeddings(self, z):
        """The embeddings of the global batch (`global_batch.cross_replica_gather`).

        Under a multi-replica TensorFlow strategy, this replica's rows gathered with every other
        replica's; `z` itself otherwise (one device, or JAX's SPMD program on the global batch).
        """
        return global_batch.cross_replica_gather(z)

    def compute_terms(self, data, training=False):
        """The loss terms and the embeddings' std for a pair of views; backend-neutral.

        One (online, target) pair of embeddings, or two with `symmetric`, whose terms are
        averaged (`branches.embedding_pairs`).
        """
        data, labels = probe_lib.split_labels(data, self.online_probe is not None)
        if self.photometric is not None:  # crops in: the views' photometric half, here
            data = self.photometric(data, training=training)
        keep = {}  # branch a's features of view a, for the probe
        pairs = branches.embedding_pairs(self, data, training, keep)
        total = {}
        for z_a, z_b in pairs:
            z_a = self.gather_embeddings(z_a)
            z_b = self.gather_embeddings(z_b)
            terms = global_batch.global_batch_vicreg_loss(z_a, z_b, **self.loss_options)
            terms["std"] = (losses.embedding_std(z_a) + losses.embedding_std(z_b)) / 2.0
            for name, value in terms.items():
                total[name] = value if name not in total else total[name] + value
        total = {name: value / float(len(pairs)) for name, value in total.items()}
        if self.online_probe is not None:  # a step of its own SGD when training
            total.update(self.online_probe.update(keep["features"], labels, training))
        return total

    # ----------------------------------------------------------------------------------------------
    # Training: one thin step per backend (keras_vicreg.models.steps), all built on compute_terms.

    def train_step(self, *args):
        return steps.backend_steps().train_step(self, *args)

    def test_step(self, *args):
        return steps.backend_steps().test_step(self, *args)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TensorFlow trainer only; `symbolic_build` says why (keras issue #20585).
        return steps.backend_steps().symbolic_build(
            self, super()._maybe_symbolic_build, iterator=iterator, data_batch=data_batch
        )

    def update_momentum_encoder(self):
        """Moves the momentum encoder towards branch a: `b = m * b + (1 - m) * a` (m ramped).

        Called by every backend's `train_step` right after the optimizer step (a no-op without
        `momentum`); backend-neutral, so that JAX's stateless step records the new values.
        """
        if self.momentum is not None:
            branches.update_momentum_encoder(self)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def update_trackers(self, terms):
        """Adds a step's terms to the metrics shown by `fit` and returns the running means."""
        for name, tracker in self._trackers.items():
            tracker.update_state(ops.stop_gradient(terms[name]))
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    # ----------------------------------------------------------------------------------------------
    # Serialisation (`models.serialization`).

    def get_config(self):
        return serialization.vicreg_config(self, super().get_config())

    @classmethod
    def from_config(cls, config):
        return cls(**serialization.vicreg_kwargs(config))
