"""An online linear probe: a softmax classifier trained on stop-gradient features while pretraining.

Every train step, `VICReg.compute_terms` hands the probe branch a's pooled representation of view
a, under stop-gradient, and the batch's labels; the probe takes one step of SGD with momentum (and
optional weight decay) on the softmax cross-entropy of its logits, and reports that loss and its
running top-1 on the training batches (`probe_loss`, `probe_train_top1`, percent). Collapse, or a
learning rate that is too high, shows there while pretraining runs, rather than after a separate
linear evaluation.

Why by hand: the gradient of the mean softmax cross-entropy of a linear layer is closed-form,
`dW = f^T (softmax(f W + b) - onehot) / B`, `db = sum_rows(softmax - onehot) / B`, and the update
is torch.optim.SGD's (`v = mu v + g + wd w`, `w -= lr v`), written in `keras.ops`. A second Keras
optimizer (the usual way) cannot be used: Keras' JAX trainer carries only the model's trainable,
non-trainable, main-optimizer and metric variables through its stateless step, so a second
optimizer's variables would not ride in the state. Here every variable of the probe (kernel, bias
and their momentum buffers) is a NON-trainable model variable, updated like BatchNorm's moving
statistics during the forward pass; so the main optimizer never sees them (LARS' or AdamW's
settings do not touch the probe), JAX records their new values with the rest of the state, they
save and load with the model's weights (a resumed run restores the probe), and no gradient of
the VICReg loss can reach them or leak from them: the features are stop-gradient and the probe
never enters the loss. The variables start at zero, so building the probe draws no random number
and a model's seeded initialisation is the same with and without it.

Deviation from solo-learn (`solo/methods/base.py`), which adds the probe's loss, on detached
features, to the total loss and steps it with the main optimizer in a parameter group of its own
(LARS' trust ratio switched off for it): the arithmetic of one SGD step is the same, but the
probe's step here uses the features of the forward pass before the backbone's update in the same
step, as solo-learn's does, and its learning rate is constant (solo-learn schedules it with the
backbone's).

Distribution: under a TensorFlow strategy each replica computes its rows' update, and the
variables (aggregation "mean") take the mean of the replicas' new values, which, the update being
linear in the gradient, is the update of the mean gradient. On PyTorch with several processes the
gradient is summed over processes and divided by their number before the update. JAX's
DataParallel step sees the global batch already.
"""

import keras
from keras import ops

from keras_vicreg.models import global_batch

METRICS = ("probe_loss", "probe_train_top1")


@keras.saving.register_keras_serializable(package="keras_vicreg")
class OnlineProbe(keras.layers.Layer):
    """A linear softmax classifier trained by SGD on the features `VICReg` gives it.

    Args:
        num_classes: the number of classes (labels are int class indices in [0, num_classes)).
        learning_rate: SGD's step size (solo-learn's default classifier rate is 0.1).
        momentum: SGD's momentum, in [0, 1).
        weight_decay: L2 decay added to the kernel's and bias's gradients (solo-learn: 0).
        **kwargs: passed to `keras.layers.Layer` (e.g. `name`).
    """

    def __init__(self, num_classes, learning_rate=0.1, momentum=0.9, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}"
            )
        if not learning_rate > 0 or not 0.0 <= momentum < 1.0 or not weight_decay >= 0:
            raise ValueError(
                "The probe needs learning_rate > 0, momentum in [0, 1) and weight_decay >= 0. "
                f"Received: learning_rate={learning_rate!r}, momentum={momentum!r}, "
                f"weight_decay={weight_decay!r}"
            )
        self.num_classes = num_classes
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay

    def build(self, features_shape):
        dim = int(features_shape[-1])

        def variable(name, shape):
            return self.add_weight(
                shape=shape, initializer="zeros", dtype="float32", trainable=False,
                name=name, aggregation="mean", autocast=False,
            )

        self.kernel = variable("kernel", (dim, self.num_classes))
        self.bias = variable("bias", (self.num_classes,))
        self.kernel_velocity = variable("kernel_velocity", (dim, self.num_classes))
        self.bias_velocity = variable("bias_velocity", (self.num_classes,))
        self.built = True

    def logits(self, features):
        """The probe's logits of a batch of features, in float32."""
        features = ops.cast(features, "float32")
        return ops.matmul(features, self.kernel.value) + self.bias.value

    def gradients(self, features, labels):
        """(kernel gradient, bias gradient, mean loss, top-1 percent) of a batch, closed-form."""
        features = ops.cast(ops.stop_gradient(ops.convert_to_tensor(features)), "float32")
        labels = ops.reshape(ops.cast(ops.convert_to_tensor(labels), "int32"), (-1,))
        logits = self.logits(features)
        onehot = ops.one_hot(labels, self.num_classes, dtype="float32")
        log_probs = ops.log_softmax(logits, axis=-1)
        loss = -ops.mean(ops.sum(onehot * log_probs, axis=-1))
        hits = ops.cast(ops.equal(ops.argmax(logits, axis=-1), labels), "float32")
        residual = (ops.exp(log_probs) - onehot) / ops.cast(ops.shape(features)[0], "float32")
        grad_kernel = ops.matmul(ops.transpose(features), residual)
        grad_bias = ops.sum(residual, axis=0)
        torch_group = global_batch._torch_group()
        if torch_group is not None:  # every process's mean gradient (see the module docstring)
            size = float(torch_group.rank_and_size()[1])
            grad_kernel = torch_group.all_reduce_sum(grad_kernel) / size
            grad_bias = torch_group.all_reduce_sum(grad_bias) / size
        return grad_kernel, grad_bias, loss, 100.0 * ops.mean(hits)

    def update(self, features, labels, training=True):
        """One SGD step on a batch (with `training`); returns its loss and top-1 before the step.

        Args:
            features: (batch, d) features; the probe never passes a gradient back to them.
            labels: (batch,) int class indices.
            training: take the step; False only scores the batch.

        Returns:
            {"probe_loss": mean cross-entropy, "probe_train_top1": percent of rows right}.
        """
        grad_kernel, grad_bias, loss, top1 = self.gradients(features, labels)
        if training:
            for weight, velocity, grad in ((self.kernel, self.kernel_velocity, grad_kernel),
                                           (self.bias, self.bias_velocity, grad_bias)):
                grad = grad + self.weight_decay * weight.value
                new_velocity = self.momentum * velocity.value + grad
                velocity.assign(new_velocity)
                weight.assign(weight.value - self.learning_rate * new_velocity)
        return {"probe_loss": loss, "probe_train_top1": top1}

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, learning_rate=self.learning_rate,
            momentum=self.momentum, weight_decay=self.weight_decay,
        )
        return config


def check_probe(probe):
    """Raises a ValueError unless `probe` is an `OnlineProbe` or None."""
    if probe is not None and not isinstance(probe, OnlineProbe):
        raise ValueError(
            "`online_probe` must be a keras_vicreg OnlineProbe (e.g. OnlineProbe(num_classes=10)) "
            f"or None. Received: online_probe={probe!r}"
        )


def split_labels(data, labelled):
    """(the views' part of a batch, its labels or None): `((view_a, view_b), labels)` batches
    carry labels for the probe (`labelled`); without a probe the batch is the views as given."""
    if not labelled:
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 3 and data[2] is None:
        data = data[:2]  # train_on_batch passes (x, y, sample_weight)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(
        data[0], (tuple, list, dict)
    ) and data[1] is not None:
        return data[0], data[1]
    raise ValueError(
        "A VICReg model with an online probe trains on labelled pairs: give `fit` batches "
        "((view_a, view_b), labels), or build the model without `online_probe`. Received: a batch "
        f"of structure {keras.tree.map_structure(lambda t: tuple(getattr(t, 'shape', ())), data)}"
    )
