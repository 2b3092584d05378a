"""normref: the float64 ground truth for normalization in deep learning.

Every normalizer is a function mirroring ``torch.nn.functional`` (names,
argument order, defaults), computed in float64 on a numba fast path, with
exact derivatives through :func:`vjp`, :func:`jvp`, :func:`jacobian` and
:func:`jacobian_operator`, and an independent autograd.numpy reference in
:mod:`normref.reference`.  ``normref.registry.REGISTRY`` lists them all with
their taxonomy (NAP x NOP x NRR) and papers.

Importing normref compiles nothing: numba kernels compile (or load from the
on-disk cache) on first call.
"""
from .autodiff import jacobian, jacobian_operator, jvp, vjp
from .registry import REGISTRY, registered, unregister
from .registration import register

# -- normalizers (each module registers itself: one line per normalizer) ------
from .activations.batch_norm import batch_norm
from .activations.instance_norm import instance_norm
from .activations.layer_norm import layer_norm
from .activations.group_norm import group_norm
from .activations.rms_norm import rms_norm
from .activations.positional_norm import positional_norm
from .activations.batch_group_norm import batch_group_norm
from .activations.ghost_batch_norm import ghost_batch_norm
from .activations.mean_variance_norm import mean_variance_norm
from .activations.local_response_norm import local_response_norm
from .activations.normalize import normalize
from .weights.weight_norm import weight_norm
from .activations.pca_whitening import pca_whitening
from .activations.zca_whitening import zca_whitening
from .activations.cholesky_whitening import cholesky_whitening
from .activations.iter_norm import iter_norm
from .activations.group_whitening import group_whitening
from .activations.batch_renorm import batch_renorm
from .activations.evonorm_b0 import evonorm_b0
from .activations.evonorm_s0 import evonorm_s0
from .activations.filter_response_norm import filter_response_norm
# -- end normalizers ----------------------------------------------------------

__version__ = "0.1.0"

__all__ = ["vjp", "jvp", "jacobian", "jacobian_operator", "REGISTRY", "register",
           "registered", "unregister"] + sorted(REGISTRY)
