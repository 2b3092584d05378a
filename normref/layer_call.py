r"""How a normalizer is applied as a layer: the ``layer=`` fact of its Spec.

A network layer and the invariance table both see a normalizer acting on the
summed inputs of a fully connected layer,

.. math::

    A = X W^\top \in \mathbb R^{N \times F} \qquad (N \text{ cases}, F \text{ features}),

and each normalizer's module says, with a :class:`LayerCall`, how it is
called on such an ``(N, F)`` array: which positional arguments (the input,
running statistics left out, the affine ``weight`` / ``bias``, flags), at
which slots the affine parameters sit (their gradients are read from the
same slots of the VJP), whether the activations are viewed under another
shape first (instance norm: ``(N, c, F / c)``; LRN: ``(N, F, 1)``), which
options the caller must give (``num_groups``), and the options the invariance
table uses for its fixed geometry :data:`TABLE_CASES` ``= 8`` cases and
:data:`TABLE_FEATURES` ``= 12 = 3 x 4`` features (3 groups of 4, virtual
batches of 4, whitening groups of 4).

A *weight* normalizer (weight norm) is not applied to the activations but to
the weight matrix: its layer is :math:`h = X f(W)^\top` (``form="weights"``).

This module is a leaf (NumPy and the standard library only) so that every
normalizer module can import it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["LayerCall", "REQUIRED", "TABLE_CASES", "TABLE_FEATURES", "FORMS", "channels_view"]

#: geometry of the invariance table (normref.analysis.invariance): the cases of a batch
TABLE_CASES = 8
#: geometry of the invariance table: the features (summed inputs), 3 groups of 4
TABLE_FEATURES = 12

FORMS = ("activations", "weights")


class _Required:
    def __repr__(self):
        return "REQUIRED"


#: default of an option the caller must give (``Norm("group_norm")`` without num_groups)
REQUIRED = _Required()


def channels_view(who):
    """A ``view`` for per-(sample, channel) statistics (instance norm, FRN): the F features
    as the option ``channels`` channels of F / channels positions, ``(N, c, F / c)``."""

    def view(N, F, o):
        c = o["channels"]
        if not isinstance(c, int) or isinstance(c, bool) or c < 1 or F % c:
            raise ValueError(f"{who} layer: channels={c!r} must be a positive int dividing "
                             f"the {F} features")
        return (N, c, F // c)

    return view


class LayerCall:
    r"""How a normalizer is called on ``(N, F)`` activations (or, ``form="weights"``,
    on a ``(d_out, d_in)`` weight matrix).

    * ``args(x, weight, bias, options) -> tuple`` -- the positional arguments, ``x``
      the (viewed) activations, ``weight`` / ``bias`` the affine parameters or
      None, ``options`` the resolved options (a dict);
    * ``weight`` / ``bias`` -- their positional slots in that tuple (None: the
      normalizer has none), where the VJP's gradients are read too;
    * ``view(N, F, options) -> shape`` -- the shape the activations take for the
      call (None: ``(N, F)`` as is); the affine parameters have the shape of its
      axis 1;
    * ``options`` -- ``{name: default}`` of the options ``args`` / ``view``
      consume (not passed as keywords); default :data:`REQUIRED` when the caller
      must give it;
    * ``table`` -- the keywords the invariance table gives for its geometry
      (``N`` = :data:`TABLE_CASES`, ``F`` = :data:`TABLE_FEATURES`): options and
      normalizer keywords alike; the table adds its own ``eps`` to every
      normalizer whose signature has one;
    * ``form`` -- ``"activations"`` (default) or ``"weights"``: a weight normalizer,
      the layer is :math:`X f(W)^\top` with ``f`` called as ``args(W, None, None, options)``.
    """

    def __init__(self, args: Callable, *, weight=None, bias=None, view=None,
                 options: Mapping[str, Any] | None = None, table: Mapping[str, Any] | None = None,
                 form: str = "activations"):
        if not callable(args):
            raise TypeError(f"LayerCall: args must be callable (x, weight, bias, options) -> tuple, "
                            f"got {type(args).__name__}")
        if view is not None and not callable(view):
            raise TypeError(f"LayerCall: view must be None or callable (N, F, options) -> shape, "
                            f"got {type(view).__name__}")
        for slot_name, slot in (("weight", weight), ("bias", bias)):
            if slot is not None and (not isinstance(slot, int) or isinstance(slot, bool) or slot < 1):
                raise TypeError(f"LayerCall: {slot_name} must be None or a positional slot >= 1, "
                                f"got {slot!r}")
        if bias is not None and weight is None:
            raise ValueError("LayerCall: a bias slot without a weight slot")
        if form not in FORMS:
            raise ValueError(f"LayerCall: form must be one of {FORMS}, got {form!r}")
        self.args, self.weight, self.bias, self.view, self.form = args, weight, bias, view, form
        self.options = dict(options or {})
        self.table = dict(table or {})

    @property
    def affine(self):
        """The normalizer has affine parameters in this layer form."""
        return self.weight is not None

    def resolve(self, kwargs, who="layer"):
        """Split ``kwargs`` into ``(options, keywords)``: the declared options (defaults
        filled in; TypeError naming a missing required one) and the rest, which go to
        the normalizer unchanged."""
        rest = dict(kwargs)
        options = {}
        for opt, default in self.options.items():
            if opt in rest:
                options[opt] = rest.pop(opt)
            elif default is REQUIRED:
                raise TypeError(f"{who} needs the option {opt}=...")
            else:
                options[opt] = default
        return options, rest

    def shape(self, N, F, options):
        """The shape ``(N, F)`` activations take for the call."""
        if self.view is None:
            return (N, F)
        shape = tuple(int(s) for s in self.view(N, F, options))
        if int(np.prod(shape)) != N * F:
            raise ValueError(f"the view {shape} of ({N}, {F}) activations does not keep the "
                             f"{N * F} elements (options {options})")
        return shape

    def param_shape(self, N, F, options):
        """Shape of the affine parameters: axis 1 of the viewed activations."""
        return (self.shape(N, F, options)[1],)

    def arguments(self, x, weight, bias, options):
        """The positional arguments for activations ``x`` already viewed by :meth:`shape`."""
        return tuple(self.args(x, weight, bias, options))

    def pre_activation_layer(self, function, **kwargs):
        r"""``layer(X, W)``: the normalized summed inputs :math:`f(X W^\top)` (activations
        form, output reshaped to ``(N, d_out)``) or :math:`X f(W)^\top` (weights form),
        no affine recovery; ``kwargs`` split by :meth:`resolve`."""
        options, rest = self.resolve(kwargs, f"{getattr(function, '__name__', 'normalizer')} layer")

        if self.form == "weights":
            def layer(X, W):
                return X @ np.asarray(function(*self.arguments(W, None, None, options), **rest)).T
        else:
            def layer(X, W):
                A = X @ W.T
                x = A.reshape(self.shape(*A.shape, options))
                y = function(*self.arguments(x, None, None, options), **rest)
                return np.asarray(y).reshape(A.shape)
        return layer

    def __repr__(self):
        return (f"LayerCall(form={self.form!r}, weight={self.weight}, bias={self.bias}, "
                f"options={self.options}, table={self.table})")
