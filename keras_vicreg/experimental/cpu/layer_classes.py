"""Swapping the class of a model's layers in place, for drop-in faster kernels.

`keras_vicreg.experimental.cpu.batch_norm.fuse_batch_norm` and
`keras_vicreg.experimental.cpu.conv.use_matmul_filter_gradients` give layers a subclass that holds
the same state but computes faster; the layers keep their weights,
names, config and place in the graph (nested models, such as keras-hub's `ResNetBackbone`,
included).
"""


def swap_class(model, old_class, new_class, accept=lambda layer: True):
    """Makes every layer of `model` whose class is exactly `old_class` (and that `accept`s) a
    `new_class`, in place; returns the number of layers changed."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if type(layer) is old_class and accept(layer)
    ]
    for layer in layers:
        layer.__class__ = new_class
    return len(layers)
