r"""Small networks assembled from normref layers, with exact forward and gradients.

A :class:`MLP` is a list of layers acting on ``(N, features)`` activations:

* :class:`Linear` -- :math:`y = x W^\top + b` (PyTorch layout, ``W`` of shape
  ``(d_out, d_in)``);
* :class:`Activation` -- ``"relu"``, ``"tanh"`` or ``"identity"``, elementwise;
* :class:`Norm` -- any registered activation normalizer whose Spec declares
  how it acts on ``(N, features)`` activations (its ``layer=`` fact, a
  :class:`normref.layer_call.LayerCall`: batch norm in training mode with the
  features as channels, layer norm over the features, group norm with
  ``num_groups``, ...), with its optional affine parameters.

Backward passes are exact: the normalizers go through :func:`normref.vjp`
(the numba fast path, float64), the linear layers and activations through
their hand-written VJPs

.. math::

    \bar x = \bar y\,W,\qquad \bar W = \bar y^\top x,\qquad \bar b = \textstyle\sum_n \bar y_n,
    \qquad \bar x = \phi'(x) \odot \bar y .

Every layer also has an autograd.numpy twin built from :mod:`normref.reference`
(:meth:`MLP.reference_forward`), the independent oracle the tests compare
against, and the route to second derivatives.

Batch normalization couples the examples of a batch: output ``n`` depends on
the parameters through the statistics of the whole batch.  Every derivative
here is taken with the batch held fixed, so :meth:`MLP.output_jacobian`
returns :math:`\partial f_n(\theta; x_1, \dots, x_N) / \partial \theta`, the
total derivative of output ``n`` including its dependence through the batch
statistics.
"""
from __future__ import annotations

import abc


import numpy as np

from .autodiff import jvp as _jvp, vjp as _vjp
from .registry import REGISTRY

__all__ = ["Linear", "Activation", "Norm", "MLP", "Trace", "LOSSES", "LOSS_CONVENTION",
           "output_hessians"]


# ---------------------------------------------------------------------- layers
class Layer(abc.ABC):
    """A layer: named float64 parameter arrays, a forward with pullback, an autograd twin."""

    param_names: tuple = ()

    def __init__(self):
        self.params = {}

    @abc.abstractmethod
    def vjp(self, x):
        """``(y, pullback)``; ``pullback(dy, params=True) -> (dx, {param name: grad})``
        (``params=False`` may skip the parameter gradients)."""

    def forward(self, x):
        return self.vjp(x)[0]

    @abc.abstractmethod
    def jvp(self, x, dx, dparams):
        """``(y, dy)``: forward value and the directional derivative along the input
        tangent ``dx`` and the parameter tangents ``dparams`` (a dict, as ``params``)."""

    @abc.abstractmethod
    def reference(self, x, params):
        """The same layer in autograd.numpy, parameters taken from ``params`` (a dict)."""

    @property
    def n_params(self):
        return int(sum(self.params[k].size for k in self.param_names))


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Linear(Layer):
    r"""Fully connected layer :math:`y = x W^\top + b`.

    ``init``: ``"gaussian"`` draws :math:`W_{ij} \sim \mathcal N(0, s^2/d_\text{in})`
    (``s = scale``; ``scale=1`` is LeCun, ``sqrt(2)`` is He);
    ``"orthogonal"`` draws a Haar-random matrix with orthonormal rows or
    columns (QR of a Gaussian matrix, signs fixed by the diagonal of R) times
    ``scale``; ``"zeros"`` gives zeros.  The bias (if any) starts at zero.
    """

    def __init__(self, d_in, d_out, bias=True, *, init="gaussian", scale=1.0, rng=None):
        super().__init__()
        self.d_in, self.d_out = int(d_in), int(d_out)
        g = _rng(rng)
        if init == "gaussian":
            W = g.standard_normal((self.d_out, self.d_in)) * (scale / np.sqrt(self.d_in))
        elif init == "orthogonal":
            m = g.standard_normal((max(self.d_out, self.d_in), min(self.d_out, self.d_in)))
            q, r = np.linalg.qr(m)
            q = q * np.sign(np.diag(r))
            W = scale * (q if self.d_out >= self.d_in else q.T)
        elif init == "zeros":
            W = np.zeros((self.d_out, self.d_in))
        else:
            raise ValueError(f"unknown init {init!r}: expected 'gaussian', 'orthogonal' or 'zeros'")
        self.params["weight"] = np.ascontiguousarray(W, dtype=np.float64)
        self.param_names = ("weight", "bias") if bias else ("weight",)
        if bias:
            self.params["bias"] = np.zeros(self.d_out)

    def vjp(self, x):
        W = self.params["weight"]
        y = x @ W.T
        if "bias" in self.params:
            y = y + self.params["bias"]

        def pullback(dy, params=True):
            if not params:
                return dy @ W, {}
            grads = {"weight": dy.T @ x}
            if "bias" in self.params:
                grads["bias"] = dy.sum(axis=0)
            return dy @ W, grads

        return y, pullback

    def jvp(self, x, dx, dparams):
        W = self.params["weight"]
        y = x @ W.T
        dy = dx @ W.T + x @ dparams["weight"].T
        if "bias" in self.params:
            y = y + self.params["bias"]
            dy = dy + dparams["bias"]
        return y, dy

    def reference(self, x, params):
        import autograd.numpy as anp

        y = anp.dot(x, anp.transpose(params["weight"]))
        if "bias" in params:
            y = y + params["bias"]
        return y

    def __repr__(self):
        return f"Linear({self.d_in}, {self.d_out}, bias={'bias' in self.params})"


class Activation(Layer):
    r"""Elementwise nonlinearity: ``"relu"`` (:math:`\phi'(0) = 0`), ``"tanh"``, ``"identity"``."""

    KINDS = ("relu", "tanh", "identity")

    def __init__(self, kind="relu"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown activation {kind!r}: expected one of {self.KINDS}")
        self.kind = kind

    def vjp(self, x):
        if self.kind == "relu":
            mask = x > 0
            return x * mask, lambda dy, params=True: (dy * mask, {})
        if self.kind == "tanh":
            y = np.tanh(x)
            return y, lambda dy, params=True: (dy * (1.0 - y * y), {})
        return x, lambda dy, params=True: (dy, {})

    def jvp(self, x, dx, dparams):
        if self.kind == "relu":
            mask = x > 0
            return x * mask, dx * mask
        if self.kind == "tanh":
            y = np.tanh(x)
            return y, dx * (1.0 - y * y)
        return x, dx

    def reference(self, x, params):
        import autograd.numpy as anp

        if self.kind == "relu":
            return anp.where(x > 0, x, 0.0)
        if self.kind == "tanh":
            return anp.tanh(x)
        return x

    def __repr__(self):
        return f"Activation({self.kind!r})"


class Norm(Layer):
    r"""A registered normalizer as a layer on ``(N, features)`` activations.

    How it is called is the normalizer's own ``layer=`` fact
    (:class:`normref.layer_call.LayerCall`, declared in its module):
    ``Norm("batch_norm", eps=1e-5)`` is training-mode batch norm with the
    features as channels (no running statistics kept); ``Norm("layer_norm")``
    normalizes each example over its features; ``Norm("group_norm",
    num_groups=4)`` needs its option.  Keywords that are not options of the
    layer fact (``eps``, ``momentum``, ``p``, ...) are passed to the normalizer
    unchanged.

    ``affine``: None (default) gives the normalizer's affine parameters when
    it has any (weight 1, bias 0, as PyTorch initializes them), False none.
    ``features`` is inferred by :class:`MLP` from the preceding Linear layer.
    """

    def __init__(self, name, *, features=None, affine=None, **kwargs):
        super().__init__()
        if name not in REGISTRY:
            raise ValueError(f"unknown normalizer {name!r}; registered: {sorted(REGISTRY)}")
        spec = REGISTRY[name]
        if spec.layer is None or spec.layer.form != "activations":
            usable = sorted(n for n, s in REGISTRY.items()
                            if s.layer is not None and s.layer.form == "activations")
            raise ValueError(f"{name!r} is not an activation normalizer usable as a layer "
                             f"(its Spec declares no activations-form layer=); usable: {usable}")
        self.name, self.spec, self.adapter = name, spec, spec.layer
        self.options, self.kwargs = self.adapter.resolve(kwargs, f"Norm({name!r})")
        has_affine = self.adapter.affine
        if affine and not has_affine:
            raise ValueError(f"{name} has no affine parameters")
        self.affine = has_affine if affine is None else bool(affine)
        self.features = None
        if features is not None:
            self.build(features)

    def build(self, features):
        """Create the affine parameters for ``features`` channels (once)."""
        self.features = int(features)
        self.adapter.shape(1, self.features, self.options)  # the view must fit the features
        if self.affine and not self.params:
            shape = self.adapter.param_shape(1, self.features, self.options)
            self.params["weight"] = np.ones(shape)
            names = ["weight"]
            if self.adapter.bias is not None:
                self.params["bias"] = np.zeros(shape)
                names.append("bias")
            self.param_names = tuple(names)

    @property
    def per_feature(self):
        """True when every affine parameter is one value per feature, shape ``(F,)``."""
        return bool(self.params) and all(self.params[n].shape == (self.features,)
                                         for n in self.param_names)

    def _call_args(self, x, params):
        w = params.get("weight") if self.affine else None
        b = params.get("bias") if self.affine else None
        return self.adapter.arguments(x, w, b, self.options)

    def _view(self, shape):
        return self.adapter.shape(shape[0], shape[1], self.options)

    def vjp(self, x):
        if self.features is None:
            self.build(x.shape[1])
        shape = x.shape
        args = self._call_args(x.reshape(self._view(shape)), self.params)
        y, pb = _vjp(self.spec.function, *args, **self.kwargs)

        def pullback(dy, params=True):
            g = pb(np.asarray(dy).reshape(y.shape))
            grads = {}
            if self.affine and params:
                grads["weight"] = g[self.adapter.weight]
                if "bias" in self.params:
                    grads["bias"] = g[self.adapter.bias]
            return g[0].reshape(shape), grads

        return y.reshape(shape), pullback

    def jvp(self, x, dx, dparams):
        if self.features is None:
            self.build(x.shape[1])
        shape = x.shape
        view = self._view(shape)
        args = self._call_args(x.reshape(view), self.params)
        tangents = [None] * len(args)
        tangents[0] = np.asarray(dx, dtype=np.float64).reshape(view)
        if self.affine:
            tangents[self.adapter.weight] = dparams["weight"]
            if "bias" in self.params:
                tangents[self.adapter.bias] = dparams["bias"]
        y, dy = _jvp(self.spec.function, args, tangents, **self.kwargs)
        return np.asarray(y).reshape(shape), np.asarray(dy).reshape(shape)

    def reference(self, x, params):
        import autograd.numpy as anp

        shape = x.shape
        xv = anp.reshape(x, self._view(shape))
        y = self.spec.reference(*self._call_args(xv, params), **self.kwargs)
        return anp.reshape(y, shape)

    def __repr__(self):
        opts = {**self.options, **self.kwargs}
        extra = "".join(f", {k}={v!r}" for k, v in opts.items())
        return f"Norm({self.name!r}, affine={self.affine}{extra})"


# ------------------------------------------------------------------------ MLP
class Trace:
    """One forward pass of an :class:`MLP`: ``inputs[k]`` is the input of layer
    ``k``, ``output`` the network output; :meth:`backward` pulls cotangents back."""

    def __init__(self, net, inputs, output, pullbacks):
        self.net, self.inputs, self.output, self._pullbacks = net, inputs, output, pullbacks

    def backward(self, dy, params=True):
        """``(dx, grad, outs)``: input cotangent, flat parameter gradient (None
        when ``params=False``, which skips the weight-gradient products) and
        ``outs[k]``, the cotangent of layer ``k``'s *output*."""
        d = np.asarray(dy, dtype=np.float64)
        if d.shape != self.output.shape:
            raise ValueError(f"cotangent has shape {d.shape}, expected {self.output.shape}")
        n = len(self._pullbacks)
        grads, outs = [None] * n, [None] * n
        for k in range(n - 1, -1, -1):
            outs[k] = d
            d, grads[k] = self._pullbacks[k](d, params)
        return d, (self.net._flatten(grads) if params else None), outs


#: loss names -> the per-sample output Hessian's meaning (see :data:`LOSS_CONVENTION`)
LOSSES = ("squared", "mse", "softmax_ce", "xent")

#: The one loss convention shared with :mod:`normref.analysis.curvature`.
LOSS_CONVENTION = r"""
L(\theta) = \frac1N \sum_{n=1}^N \ell(f_n(\theta), y_n),\qquad
\ell_\text{squared}(z, y) = \tfrac12\|z - y\|^2,\qquad
\ell_\text{xent}(z, y) = -\log\operatorname{softmax}(z)_y,
\qquad \ell_\text{mse}(z, y) = \tfrac1K\|z - y\|^2 = \tfrac2K\,\ell_\text{squared}
"""


def _canonical_loss(loss):
    if loss == "xent":
        return "softmax_ce"
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: expected one of {LOSSES}")
    return loss


def _loss_value_and_cotangent(out, y, loss):
    """Loss value and dL/d(out) (mean over the N samples, :data:`LOSS_CONVENTION`)."""
    N = out.shape[0]
    loss = _canonical_loss(loss)
    if loss in ("mse", "squared"):
        y = np.asarray(y, dtype=np.float64).reshape(out.shape)
        r = out - y
        c = 1.0 / r.size if loss == "mse" else 0.5 / N
        return float(c * np.sum(r * r)), 2.0 * c * r
    z = out - out.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    t = _targets(y, out.shape)
    return float(-np.sum(t * logp) / N), (np.exp(logp) * t.sum(axis=1, keepdims=True) - t) / N


def output_hessians(out, loss, y=None):
    r"""Per-sample Hessians :math:`H_n = \nabla^2_z \ell(z_n, y_n)`, shape ``(N, K, K)``.

    ``"squared"``: :math:`I`; ``"mse"``: :math:`\tfrac2K I`; ``"softmax_ce"`` /
    ``"xent"``: :math:`\mathrm{diag}(p_n) - p_n p_n^\top` times the total target
    mass of row n (1 for labels or probability rows).  The Hessian of :math:`L`
    itself is :math:`H_n / N` (:data:`LOSS_CONVENTION`).
    """
    out = np.asarray(out, dtype=np.float64)
    N, K = out.shape
    loss = _canonical_loss(loss)
    if loss in ("squared", "mse"):
        c = 1.0 if loss == "squared" else 2.0 / K
        return np.broadcast_to(c * np.eye(K), (N, K, K))
    e = np.exp(out - out.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    H = np.einsum("nk,kl->nkl", p, np.eye(K)) - np.einsum("nk,nl->nkl", p, p)
    if y is not None:
        H = H * _targets(y, out.shape).sum(axis=1)[:, None, None]
    return H


def _targets(y, shape):
    y = np.asarray(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        t = np.zeros(shape)
        t[np.arange(shape[0]), y] = 1.0
        return t
    return np.asarray(y, dtype=np.float64).reshape(shape)


class MLP:
    r"""A sequential network of :class:`Linear`, :class:`Activation` and :class:`Norm` layers.

    Parameters live in the layers; :attr:`params` is their flat concatenation
    (layer order, then each layer's ``param_names`` order, C order) and
    :meth:`set_params` writes one back.

    Losses: one convention, shared with :mod:`normref.analysis.curvature`
    (:data:`LOSS_CONVENTION`): a mean over the N samples of a per-sample loss,

    .. math::

        L = \frac1N\sum_n \ell(f_n, y_n),\quad
        \ell_\text{squared} = \tfrac12\|f_n - y_n\|^2,\quad
        \ell_\text{softmax\_ce} = -\sum_k t_{nk} \log \operatorname{softmax}(f_n)_k

    (``"xent"`` is an alias of ``"softmax_ce"``), with ``t`` one-hot for integer
    labels ``y`` of shape ``(N,)``, or ``y`` itself (rows of probabilities)
    otherwise.  ``"mse"`` is PyTorch's mean reduction
    :math:`\frac1{NK}\sum_{n,k}(f_{nk}-y_{nk})^2`, i.e. the per-sample loss
    :math:`\tfrac1K\|f_n-y_n\|^2 = \tfrac2K\,\ell_\text{squared}`; it is
    kept for comparisons with PyTorch, and its Gauss-Newton matrix is
    :math:`\tfrac2K` times that of ``"squared"``.
    """

    def __init__(self, layers):
        self.layers = list(layers)
        width = None
        for layer in self.layers:
            if isinstance(layer, Linear):
                if width is not None and layer.d_in != width:
                    raise ValueError(f"{layer!r} follows a layer of width {width}")
                width = layer.d_out
            elif isinstance(layer, Norm) and layer.features is None and width is not None:
                layer.build(width)

    # -- parameters
    def _slots(self):
        for layer in self.layers:
            for name in layer.param_names:
                yield layer, name

    @property
    def n_params(self):
        return int(sum(layer.params[name].size for layer, name in self._slots()))

    @property
    def params(self):
        """Flat float64 copy of every parameter."""
        parts = [layer.params[name].ravel() for layer, name in self._slots()]
        return np.concatenate(parts) if parts else np.zeros(0)

    def set_params(self, theta):
        theta = np.asarray(theta, dtype=np.float64).ravel()
        if theta.size != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters, got {theta.size}")
        i = 0
        for layer, name in self._slots():
            p = layer.params[name]
            layer.params[name] = theta[i:i + p.size].reshape(p.shape).copy()
            i += p.size

    def _flatten(self, grads):
        parts = [grads[k][name].ravel() for k, layer in enumerate(self.layers) for name in layer.param_names]
        return np.concatenate(parts) if parts else np.zeros(0)

    # -- forward / backward
    def forward(self, x):
        return self.vjp(x)[0]

    __call__ = forward

    def trace(self, x):
        """Forward pass keeping what the backward needs: a :class:`Trace`."""
        h = np.asarray(x, dtype=np.float64)
        inputs, pullbacks = [], []
        for layer in self.layers:
            inputs.append(h)
            h, pb = layer.vjp(h)
            pullbacks.append(pb)
        return Trace(self, inputs, h, pullbacks)

    def vjp(self, x):
        r"""``(y, pullback)`` for the whole network at the current parameters.

        ``pullback(dy)`` returns ``(dx, grad)``, ``grad`` the flat gradient
        :math:`\bar y^\top \partial y / \partial \theta`; it may be called many
        times (one forward pass).  See :meth:`trace` for per-layer quantities.
        """
        t = self.trace(x)

        def pullback(dy):
            dx, grad, _ = t.backward(dy)
            return dx, grad

        return t.output, pullback

    def jvp(self, x, dtheta, dx=None):
        r"""``(y, dy)``: the output and :math:`\partial y/\partial\theta \cdot d\theta`
        (plus :math:`\partial y/\partial x \cdot dx`), forward mode through the
        layers' exact JVPs (:func:`normref.jvp` for the normalizers), batch held fixed."""
        h = np.asarray(x, dtype=np.float64)
        dh = np.zeros_like(h) if dx is None else np.asarray(dx, dtype=np.float64)
        for layer, dp in zip(self.layers, self.split(dtheta)):
            h, dh = layer.jvp(h, dh, dp)
        return h, dh

    def loss_and_grad(self, x, y, loss="mse"):
        """``(L, dL/dtheta)`` (flat) for ``loss`` in :data:`LOSSES`."""
        out, pb = self.vjp(x)
        value, dout = _loss_value_and_cotangent(out, y, loss)
        return value, pb(dout)[1]

    def output_jacobian(self, x):
        r"""Per-example output Jacobians, shape ``(N, d_out, n_params)``.

        ``J[n, k] = \partial f_{nk} / \partial \theta`` with the batch held fixed:
        one VJP per unit cotangent :math:`e_{nk}`, all from one forward pass.
        With batch norm, ``J[n]`` depends on every example of the batch.
        """
        out, pb = self.vjp(x)
        N, d = out.shape
        J = np.empty((N, d, self.n_params))
        e = np.zeros_like(out)
        for n in range(N):
            for k in range(d):
                e[n, k] = 1.0
                J[n, k] = pb(e)[1]
                e[n, k] = 0.0
        return J

    def offsets(self):
        """Where each parameter starts in the flat vector: one ``{name: index}`` dict
        per layer (the layout of :attr:`params` and :meth:`split`)."""
        out, i = [], 0
        for layer in self.layers:
            d = {}
            for name in layer.param_names:
                d[name] = i
                i += layer.params[name].size
            out.append(d)
        return out

    def split(self, theta):
        """A flat vector (parameters or gradient) as one ``{name: array}`` dict per layer."""
        theta = np.asarray(theta).ravel() if not hasattr(theta, "_value") else theta
        if theta.shape[0] != self.n_params:
            raise ValueError(f"expected {self.n_params} values, got {theta.shape[0]}")
        out, i = [], 0
        for layer in self.layers:
            d = {}
            for name in layer.param_names:
                p = layer.params[name]
                d[name] = theta[i:i + p.size].reshape(p.shape)
                i += p.size
            out.append(d)
        return out

    # -- the autograd twin
    def reference_forward(self, theta, x):
        """The network in autograd.numpy (normref.reference), at the flat parameters ``theta``."""
        h = x
        for layer, p in zip(self.layers, self.split(theta)):
            h = layer.reference(h, p)
        return h

    def reference_loss(self, theta, x, y, loss="mse"):
        """The loss in autograd.numpy: differentiate it with autograd.grad / hessian."""
        import autograd.numpy as anp

        out = self.reference_forward(theta, x)
        loss = _canonical_loss(loss)
        if loss == "mse":
            return anp.mean((out - np.reshape(y, out.shape)) ** 2)
        if loss == "squared":
            return 0.5 * anp.sum((out - np.reshape(y, out.shape)) ** 2) / out.shape[0]
        z = out - anp.max(out, axis=1, keepdims=True)
        logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
        return -anp.sum(_targets(y, out.shape) * logp) / out.shape[0]

    def __repr__(self):
        return "MLP([" + ", ".join(map(repr, self.layers)) + "])"
