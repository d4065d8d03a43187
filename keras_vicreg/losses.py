"""The VICReg loss: invariance, variance and covariance terms in `keras.ops`.

Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022. The semantics follow the released PyTorch code, which produced the published
numbers:

    L = sim_coeff * s(Z, Z') + std_coeff * (v(Z) + v(Z')) / 2 + cov_coeff * (c(Z) + c(Z'))

    s(Z, Z') = mean over all n*d elements of (Z - Z')^2
    v(Z)     = mean_j relu(gamma - sqrt(Var_j(Z) + eps))          Var with the unbiased N-1 divisor
    c(Z)     = sum_{i != j} C_ij^2 / d,  C = Zc^T Zc / (N - 1),   Zc = Z - mean(Z, axis=0)

Deviation from the released code: the covariance divides by the *actual* batch size minus one, where
the released code divides by the configured batch size even for a smaller last batch.

Everything is computed in float32 whatever the inputs' dtype (the 8192 x 8192 covariance in float16 is
a known source of NaNs in mixed precision).
"""

from keras import ops

COVARIANCE_METHODS = ("auto", "dense", "gram")
# The invariance term: VICReg's mean squared error, or BYOL's and SimSiam's cosine distance.
INVARIANCES = ("mse", "cosine")

# Where the batch size is unknown when the graph is traced, "auto" cannot compare N with d; it picks the
# Gram form for embeddings at least this wide (the paper's 8192-wide expander) and the dense form below.
_UNKNOWN_BATCH_GRAM_MIN_WIDTH = 2048


def _as_float32_2d(z, name):
    """Casts `z` to float32 after checking that it is a 2-D batch of at least two rows."""
    shape = tuple(z.shape)
    if len(shape) != 2:
        raise ValueError(
            f"`{name}` must be a 2-D batch of embeddings of shape (batch, features). "
            f"Received: {name}.shape={shape}"
        )
    if shape[0] is not None and shape[0] < 2:
        raise ValueError(
            "VICReg's variance and covariance need a batch of at least 2 rows; use a larger batch "
            f"(and drop the remainder of the last one). Received: {name}.shape={shape}"
        )
    return ops.cast(z, "float32")


def _check_pair(z_a, z_b):
    if tuple(z_a.shape) != tuple(z_b.shape):
        raise ValueError(
            "The two views' embeddings must have the same shape. "
            f"Received: z_a.shape={tuple(z_a.shape)}, z_b.shape={tuple(z_b.shape)}"
        )
    return _as_float32_2d(z_a, "z_a"), _as_float32_2d(z_b, "z_b")


def _batch_size(z):
    return ops.cast(ops.shape(z)[0], "float32")


def _centre(z):
    return z - ops.mean(z, axis=0, keepdims=True)


def feature_variance(z):
    """Unbiased (N-1) variance of each feature over the batch, shape (d,), in float32."""
    z = _as_float32_2d(z, "z")
    zc = _centre(z)
    return ops.sum(ops.square(zc), axis=0) / (_batch_size(z) - 1.0)


def embedding_std(z):
    """Mean per-feature standard deviation of a batch of embeddings: near 0 means collapse."""
    return ops.mean(ops.sqrt(feature_variance(ops.stop_gradient(z))))


def invariance_loss(z_a, z_b):
    """Mean squared error between the two views' embeddings, over all n*d elements."""
    z_a, z_b = _check_pair(z_a, z_b)
    return ops.mean(ops.square(z_a - z_b))


def cosine_invariance_loss(p, z):
    """2 - 2 cos(p_i, z_i) averaged over the rows: BYOL's and SimSiam's invariance term.

    It is the squared distance between the L2-normalised rows, so that only directions count;
    in [0, 4], 0 when every pair points the same way. For embeddings of per-feature std 1 it is
    about the mean squared error of `invariance_loss`, so the same `sim_coeff` balances it
    against the variance and covariance terms.
    """
    p, z = _check_pair(p, z)

    def normalise(x):  # a zero row stays zero instead of dividing by zero
        squared_norm = ops.sum(ops.square(x), axis=1, keepdims=True)
        return x / ops.sqrt(ops.maximum(squared_norm, 1e-24))

    cosine = ops.sum(normalise(p) * normalise(z), axis=1)
    return ops.mean(2.0 - 2.0 * cosine)


def invariance_term(z_a, z_b, invariance="mse"):
    """The invariance term named by `invariance`: "mse" (VICReg's) or "cosine" (BYOL's)."""
    if invariance not in INVARIANCES:
        raise ValueError(
            f"`invariance` must be one of {INVARIANCES}. Received: invariance={invariance!r}"
        )
    if invariance == "cosine":
        return cosine_invariance_loss(z_a, z_b)
    return invariance_loss(z_a, z_b)


def variance_loss(z, gamma=1.0, eps=1e-4):
    """Hinge on the per-feature standard deviation: mean_j relu(gamma - sqrt(Var_j + eps))."""
    std = ops.sqrt(feature_variance(z) + eps)
    return ops.mean(ops.relu(gamma - std))


def resolve_covariance_method(method, batch_size, width):
    """Returns "dense" or "gram": "auto" picks the one with fewer FLOPs (O(N d^2) vs O(N^2 d))."""
    if method not in COVARIANCE_METHODS:
        raise ValueError(
            f"`covariance` must be one of {COVARIANCE_METHODS}. Received: covariance={method!r}"
        )
    if method != "auto":
        return method
    if batch_size is None:
        return "gram" if width >= _UNKNOWN_BATCH_GRAM_MIN_WIDTH else "dense"
    return "gram" if batch_size < width else "dense"


def covariance_loss(z, method="auto"):
    """Sum of the squared off-diagonal covariances divided by the width d.

    Args:
        z: embeddings of shape (N, d).
        method: "dense" builds the d x d covariance matrix (O(N d^2) time, O(d^2) memory); "gram"
            gets the same value from the N x N Gram matrix, since ||Zc^T Zc||_F = ||Zc Zc^T||_F, and
            the diagonal from the per-feature variances (O(N^2 d) time, O(N^2) memory); "auto" picks
            the cheaper one from N and d.
    """
    z = _as_float32_2d(z, "z")
    n_static, d = tuple(z.shape)
    method = resolve_covariance_method(method, n_static, d)
    zc = _centre(z)
    n_minus_1 = _batch_size(z) - 1.0
    if method == "dense":
        cov = ops.matmul(ops.transpose(zc), zc) / n_minus_1
        off_diagonal = cov * (1.0 - ops.eye(d, dtype="float32"))
        return ops.sum(ops.square(off_diagonal)) / d
    gram = ops.matmul(zc, ops.transpose(zc)) / n_minus_1
    diagonal = ops.sum(ops.square(zc), axis=0) / n_minus_1
    return (ops.sum(ops.square(gram)) - ops.sum(ops.square(diagonal))) / d


def _block_bounds(size, block, num_blocks):
    """First index and length of block `block` of `num_blocks` contiguous blocks of `size` rows.

    The length is a Python int where `size` is static and divisible by `num_blocks`, so that the
    slice has a static shape (XLA) even when `block` is a tensor such as a replica id.
    """
    if isinstance(size, int) and size % num_blocks == 0:
        length = size // num_blocks
        return block * length, length
    start = (block * size) // num_blocks
    return start, ((block + 1) * size) // num_blocks - start


def covariance_loss_block(z, block, num_blocks, method="auto"):
    """One block of rows' share of `covariance_loss(z)`: the shares of all blocks sum to it.

    For distribution: with `z` the embeddings of the global batch and `block` a replica's id among
    `num_blocks` replicas, each replica computes only its own rows, and the sum of the replicas'
    shares (an all-reduce of one scalar) is the covariance term; no replica computes all of it.

    - "gram": block b of the rows of the N x N Gram matrix G = Zc Zc^T / (N - 1) against the whole
      batch; its share is (||G_b||_F^2 - ||diag(C)||^2 / num_blocks) / d, with diag(C) the
      per-feature variances. O(N^2 d / num_blocks) time, O(N^2 / num_blocks) memory.
    - "dense": block b of the rows (features) of the d x d covariance C = Zc^T Zc / (N - 1); its
      share is the sum of its off-diagonal entries squared, over d. O(N d^2 / num_blocks) time,
      O(d^2 / num_blocks) memory.
    - "auto": the cheaper of the two for N and d, as in `covariance_loss`.

    Args:
        z: embeddings of the whole (global) batch, shape (N, d).
        block: the index of the block, in [0, num_blocks); an int or an integer scalar tensor.
        num_blocks: the number of blocks, a positive int.
        method: "auto", "dense" or "gram".

    Returns:
        A float32 scalar.
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(
            f"`num_blocks` must be a positive int. Received: num_blocks={num_blocks!r}"
        )
    if isinstance(block, int) and not 0 <= block < num_blocks:
        raise ValueError(
            f"`block` must be in [0, num_blocks={num_blocks}). Received: block={block}"
        )
    z = _as_float32_2d(z, "z")
    n_static, d = tuple(z.shape)
    method = resolve_covariance_method(method, n_static, d)
    zc = _centre(z)
    n_minus_1 = _batch_size(z) - 1.0
    if method == "dense":
        start, length = _block_bounds(d, block, num_blocks)
        columns = ops.slice(zc, (0, start), (ops.shape(zc)[0], length))
        cov_rows = ops.matmul(ops.transpose(columns), zc) / n_minus_1
        on_diagonal = ops.equal(
            ops.expand_dims(ops.arange(length) + start, 1), ops.expand_dims(ops.arange(d), 0)
        )
        return ops.sum(ops.square(ops.where(on_diagonal, 0.0, cov_rows))) / d
    n = n_static if n_static is not None else ops.shape(z)[0]
    start, length = _block_bounds(n, block, num_blocks)
    rows = ops.slice(zc, (start, 0), (length, d))
    gram_rows = ops.matmul(rows, ops.transpose(zc)) / n_minus_1
    diagonal = ops.sum(ops.square(zc), axis=0) / n_minus_1
    return (ops.sum(ops.square(gram_rows)) - ops.sum(ops.square(diagonal)) / num_blocks) / d


def vicreg_loss(
    z_a,
    z_b,
    *,
    sim_coeff=25.0,
    std_coeff=25.0,
    cov_coeff=1.0,
    gamma=1.0,
    eps=1e-4,
    covariance="auto",
    invariance="mse",
):
    """The VICReg loss of two views' embeddings.

    Args:
        z_a: embeddings of the first view, shape (N, d); any float dtype (computed in float32).
        z_b: embeddings of the second view, same shape.
        sim_coeff: weight of the invariance term (lambda, 25 in the paper).
        std_coeff: weight of the variance term (mu, 25), applied to the mean of the two views' terms.
        cov_coeff: weight of the covariance term (nu, 1), applied to the sum of the two views' terms.
        gamma: target standard deviation of each feature.
        eps: added to the variance before the square root, for stability.
        covariance: "dense", "gram" or "auto" (see `covariance_loss`).
        invariance: "mse" (VICReg's mean squared error) or "cosine" (BYOL's and SimSiam's
            2 - 2 cos, `cosine_invariance_loss`), for the paper's ablation table.

    Returns:
        A dict of float32 scalars: `loss`, `invariance`, `variance`, `covariance` (the unweighted
        terms, the variance averaged and the covariance summed over the two views).

    Example:
        >>> terms = vicreg_loss(z_a, z_b)
        >>> terms["loss"]
    """
    z_a, z_b = _check_pair(z_a, z_b)
    resolve_covariance_method(covariance, None, 0)  # validates the name before any work
    similarity = invariance_term(z_a, z_b, invariance)
    variance = (variance_loss(z_a, gamma, eps) + variance_loss(z_b, gamma, eps)) / 2.0
    cov = covariance_loss(z_a, covariance) + covariance_loss(z_b, covariance)
    loss = sim_coeff * similarity + std_coeff * variance + cov_coeff * cov
    return {"loss": loss, "invariance": similarity, "variance": variance, "covariance": cov}
