"""Vision Transformers for VICReg: keras-hub's ViT layers, built offline, pooled to (batch, d).

keras-hub's `ViTBackbone` is built for one image size (its position embeddings hold one per patch
of that grid) and returns every token. VICReg, its evaluations and the export want a model from
images to pooled features that also reads other sizes (the FixRes evaluation, `serve` at the
evaluation size, `resizing.at_image_size`). So `vit` assembles keras-hub's own patch embedding and
encoder (`ViTPatchingAndEmbedding`, `ViTEncoder`: the same weights and names as `ViTBackbone`)
into a functional model with two small layers of its own:

- `ResizablePatchEmbedding`: keras-hub's patch embedding whose position embeddings are resized
  (bilinearly, the class token's kept) when the image gives another grid of patches than the one
  built, as timm and big_vision do to fine-tune at another resolution. Bilinear rather than
  bicubic: the three backends' bicubic kernels differ, their bilinear ones agree.
- `TokenPooling`: the class token, or the mean of the patch tokens.

The `.keras` file needs keras_vicreg (for those two layers) and keras-hub to load.
"""

import keras
from keras import ops
from keras_hub.src.models.vit.vit_layers import ViTEncoder
from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

POOLINGS = ("class_token", "mean")

# name: (patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
VARIANTS = {
    "vit_tiny": (4, 2, 2, 32, 64),  # for tests and smoke runs
    "vit_s16": (16, 12, 6, 384, 1536),  # ViT-S/16 (DeiT-S)
    "vit_b16": (16, 12, 12, 768, 3072),  # ViT-B/16
}


@keras.saving.register_keras_serializable(package="keras_vicreg")
class ResizablePatchEmbedding(ViTPatchingAndEmbedding):
    """keras-hub's ViT patch embedding, reading images of any size that the patches tile.

    At the grid it was built for it computes exactly what keras-hub's layer computes. At another
    grid, the position embeddings of the patches (a `grid_h x grid_w` image of `hidden_dim`
    channels) are resized bilinearly to the new grid; the class token's embedding is kept. The
    weights stay those of the built grid, so training at one size and reading another share them.
    """

    def __init__(self, image_size, patch_size, hidden_dim, **kwargs):
        # Tuples, also when read back from a `.keras` file's JSON lists.
        super().__init__(tuple(image_size), tuple(patch_size), hidden_dim, **kwargs)

    def call(self, inputs):
        patches = self.patch_embedding(inputs)
        if self.data_format == "channels_first":
            patches = ops.transpose(patches, (0, 2, 3, 1))
        grid = tuple(patches.shape[1:3])
        if None in grid:
            raise ValueError(
                "ResizablePatchEmbedding needs images of a known height and width (build the "
                f"model on a fixed size, or use `resizing.at_image_size`). Received: input shape "
                f"{tuple(inputs.shape)}"
            )
        batch = ops.shape(patches)[0]
        patches = ops.reshape(patches, (batch, grid[0] * grid[1], self.hidden_dim))
        positions = ops.cast(self.position_embedding.embeddings, patches.dtype)
        if self.use_class_token:
            class_position, positions = positions[:1], positions[1:]
        positions = self._resized_positions(positions, grid)
        if self.use_class_token:
            positions = ops.concatenate([class_position, positions], axis=0)
            class_token = ops.tile(ops.cast(self.class_token, patches.dtype), (batch, 1, 1))
            patches = ops.concatenate([class_token, patches], axis=1)
        return ops.add(patches, positions[None])

    def _resized_positions(self, positions, grid):
        built = tuple(s // p for s, p in zip(self.image_size, self.patch_size))
        if grid == built:
            return positions
        image = ops.reshape(positions, (1, built[0], built[1], self.hidden_dim))
        resized = ops.image.resize(
            ops.cast(image, "float32"), grid, interpolation="bilinear", antialias=False,
            data_format="channels_last",
        )
        return ops.cast(ops.reshape(resized, (grid[0] * grid[1], self.hidden_dim)), positions.dtype)

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_first":
            height, width = input_shape[2], input_shape[3]
        else:
            height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            tokens = None
        else:
            tokens = (height // self.patch_size[0]) * (width // self.patch_size[1])
            tokens += int(self.use_class_token)
        return (input_shape[0], tokens, self.hidden_dim)

    def get_config(self):
        # keras-hub's config names two derived numbers its __init__ does not take, and misses two
        # that it does: this one round-trips.
        config = super().get_config()
        config.pop("num_patches", None)
        config.pop("num_positions", None)
        config.update(use_patch_bias=self.use_patch_bias, data_format=self.data_format)
        return config


@keras.saving.register_keras_serializable(package="keras_vicreg")
class TokenPooling(keras.layers.Layer):
    """(batch, tokens, d) -> (batch, d): the class token (the first), or the mean of the others.

    Args:
        pooling: "class_token" or "mean".
        has_class_token: whether the first token is a class token (left out of the mean).
    """

    def __init__(self, pooling="class_token", has_class_token=True, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
        if pooling == "class_token" and not has_class_token:
            raise ValueError(
                "pooling='class_token' needs a class token. Received: has_class_token=False"
            )
        self.pooling = pooling
        self.has_class_token = has_class_token

    def call(self, tokens):
        if self.pooling == "class_token":
            return tokens[:, 0]
        return ops.mean(tokens[:, int(self.has_class_token):], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(pooling=self.pooling, has_class_token=self.has_class_token)
        return config


def vit(
    variant="vit_s16",
    *,
    input_shape=(224, 224, 3),
    pooling="class_token",
    patch_size=None,
    num_layers=None,
    num_heads=None,
    hidden_dim=None,
    mlp_dim=None,
    dropout_rate=0.0,
    name=None,
):
    """A Vision Transformer from images to pooled features (batch, hidden_dim), built offline.

    Args:
        variant: "vit_tiny" (patch 4, 2 layers, 2 heads, width 32, MLP 64: tests and smoke runs),
            "vit_s16" (ViT-S/16: 12 layers, 6 heads, width 384, MLP 1536) or "vit_b16"
            (ViT-B/16: 12 layers, 12 heads, width 768, MLP 3072).
        input_shape: (height, width, channels) of the images the model is built on, each side a
            multiple of the patch size. Other sizes read through `resizing.at_image_size`, the
            position embeddings resized (see `ResizablePatchEmbedding`).
        pooling: "class_token" (the class token after the final LayerNorm, as in ViT and DINO) or
            "mean" (the mean of the patch tokens).
        patch_size, num_layers, num_heads, hidden_dim, mlp_dim: override the variant's.
        dropout_rate: dropout in the encoder (0 in VICReg's ViT recipes).
        name: the model's name; defaults to `variant`.

    Returns:
        A functional `keras.Model` whose layers are keras-hub's ViT layers (named as in
        `keras_hub.models.ViTBackbone`) plus a `TokenPooling` named "pool".

    Example:
        >>> backbone = vit("vit_tiny", input_shape=(32, 32, 3))
        >>> backbone.output_shape
        (None, 32)
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {sorted(VARIANTS)}. Received: variant={variant!r}"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    defaults = VARIANTS[variant]
    overrides = (patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
    patch_size, num_layers, num_heads, hidden_dim, mlp_dim = (
        default if value is None else value for default, value in zip(defaults, overrides)
    )
    if len(input_shape) != 3 or any(side is None or side % patch_size for side in input_shape[:2]):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) with sides that are multiples of the "
            f"patch size {patch_size}. Received: input_shape={tuple(input_shape)}"
        )
    if hidden_dim % num_heads:
        raise ValueError(
            "`hidden_dim` must be a multiple of `num_heads`. "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    tokens = ResizablePatchEmbedding(
        image_size=tuple(input_shape[:2]),
        patch_size=(patch_size, patch_size),
        hidden_dim=hidden_dim,
        num_channels=input_shape[2],
        name="vit_patching_and_embedding",
    )(inputs)
    tokens = ViTEncoder(
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout_rate=dropout_rate,
        name="vit_encoder",
    )(tokens)
    features = TokenPooling(pooling, name="pool")(tokens)
    return keras.Model(inputs, features, name=name or variant)
