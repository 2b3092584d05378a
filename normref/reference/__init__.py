"""The independent oracle: every normalizer as its textbook formula in
autograd.numpy, same signature as the public function.

Nothing here touches normref's kernels, partitions or numerics: it is the
second opinion for forward values and first derivatives, and (through
autograd) the source of second derivatives.  Running statistics are updated
in place with plain NumPy exactly as the public function documents.
"""
from .activations import (  # noqa: F401
    batch_norm,
    instance_norm,
    layer_norm,
    group_norm,
    rms_norm,
    positional_norm,
    batch_group_norm,
    ghost_batch_norm,
    mean_variance_norm,
    local_response_norm,
    normalize,
)
from .weights import weight_norm  # noqa: F401
from .whitening import (  # noqa: F401
    pca_whitening,
    zca_whitening,
    cholesky_whitening,
    iter_norm,
    group_whitening,
)
