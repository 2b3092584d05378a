r"""Composition of plans: a normalizer built from parts, derivatives by the chain rule.

A :class:`Composite` is a :class:`~normref.registry.Plan` assembled from
*steps*, each writing one named node from earlier nodes (or from the call's
arguments, the leaves):

* a :class:`Piece` -- an elementwise operation (:class:`Product`,
  :class:`Quotient`, :class:`Maximum`, :class:`Sigmoid`, :class:`SqrtShift`,
  :class:`View`) or a recovery of :mod:`normref.recovery` -- called with the
  values of its input nodes;
* a bound part: a :class:`~normref.registry.Plan` (a
  :class:`~normref.standardize.Standardization`, say) or a statistic of one
  (:class:`GroupStd`), bound to the leaves, with a mapping from its parameter
  names to nodes;
* a factory ``lambda: part``, called when the step runs, after the steps
  before it: a part whose constants depend on their statistics (batch
  renormalization's ``r`` and ``d``).

With :math:`y = f_K \circ \dots \circ f_1` over the node graph, the
derivatives are the chain rule, exact if every part's are:

.. math::

    \dot v_k = \sum_{j \in \text{in}(k)} \frac{\partial f_k}{\partial v_j}\,\dot v_j
    \quad\text{(forward order)}, \qquad
    \bar v_j = \sum_{k:\, j \in \text{in}(k)}
    \Big(\frac{\partial f_k}{\partial v_j}\Big)^{T} \bar v_k
    \quad\text{(reverse order)},

each part supplying its own VJP and JVP; a node no tangent (or cotangent)
reaches is skipped, not filled with zeros.

The Plan contract holds for the composite as a whole: every intermediate
node and the output must be finite when the arguments are (a ValueError
naming the node otherwise: an intermediate overflow would otherwise turn
into a silently wrong finite output, ``x / inf = 0``); ``on_forward`` (the
running-statistics update) runs after those checks; the arguments a part
reads after the forward are the composite's parameters, all kept private by
:meth:`Composite.keep_private` (the derivative API hands over copies, on
which every part is bound).

Elementwise pieces broadcast with NumPy's rules; the gradient of a
broadcast operand is summed back to its own shape.  :class:`Maximum` sends
half of the cotangent to each operand at a tie (``a == b``), as
``torch.maximum`` and autograd's ``maximum`` do: the symmetric element of
the subdifferential, which is also what central finite differences measure
at the tie.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from .numerics import all_finite
from .registry import Plan

__all__ = ["Piece", "Step", "Composite", "GroupStd", "Sum", "Product", "Quotient", "Maximum",
           "Sigmoid", "SqrtShift", "View", "sum_to"]


def sum_to(g, shape):
    """Sum ``g`` (broadcast from an operand of ``shape``) back to ``shape``."""
    shape = tuple(shape)
    g = np.asarray(g)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    keep = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if keep:
        g = g.sum(axis=keep, keepdims=True)
    return g.reshape(shape)


class Piece(abc.ABC):
    """A differentiable map of arrays, run once: ``forward(*inputs)``, then linear maps.

    ``vjp(g)`` returns one gradient per input (None: zero or not differentiable),
    ``jvp(*tangents)`` the output tangent (a None tangent is zero).  A piece keeps
    what its derivatives need from the forward (residuals).
    """

    name = "piece"

    @abc.abstractmethod
    def forward(self, *inputs):
        """The output for ``inputs``; saves the residuals."""

    @abc.abstractmethod
    def vjp(self, g):
        """Gradients of ``<g, output>`` with respect to each input."""

    @abc.abstractmethod
    def jvp(self, *tangents):
        """The output tangent for the input tangents (None entries are zero)."""


class _Binary(Piece):
    """Elementwise ``f(a, b)`` with broadcasting; subclasses give the partials."""

    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        self.a, self.b = a, b
        with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
            self.out = self._f(a, b)
        return self.out

    def vjp(self, g):
        da, db = self._partials()
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return (sum_to(da(g), self.shapes[0]), sum_to(db(g), self.shapes[1]))

    def jvp(self, ta, tb):
        da, db = self._partials()
        out = None
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            if ta is not None:
                out = da(ta)
            if tb is not None:
                out = db(tb) if out is None else out + db(tb)
        return np.broadcast_to(out, np.shape(self.out)).copy()


class Sum(_Binary):
    r""":math:`a + b`; :math:`\bar a = \bar b = \bar g` (summed over broadcast axes)."""

    name = "sum"

    def _f(self, a, b):
        return a + b

    def _partials(self):
        return (lambda g: g), (lambda g: g)


class Product(_Binary):
    r""":math:`a b`; :math:`\bar a = b\,\bar g`, :math:`\bar b = a\,\bar g`."""

    name = "product"

    def _f(self, a, b):
        return a * b

    def _partials(self):
        return (lambda g: g * self.b), (lambda g: g * self.a)


class Quotient(_Binary):
    r""":math:`q = a / b`; :math:`\bar a = \bar g / b`, :math:`\bar b = -q\,\bar g / b`.

    (Written with the quotient itself, ``-(q g) / b``, not ``a g / b^2``: no
    ``b^2`` to under- or overflow.)"""

    name = "quotient"

    def _f(self, a, b):
        return a / b

    def _partials(self):
        return (lambda g: g / self.b), (lambda g: -(self.out * g) / self.b)


class Maximum(_Binary):
    r""":math:`\max(a, b)`: the cotangent goes to the larger operand, half to each at a tie.

    .. math::

        \bar a = \bar g\,[a > b] + \tfrac12 \bar g\,[a = b], \qquad
        \bar b = \bar g\,[b > a] + \tfrac12 \bar g\,[a = b]

    (torch.maximum's and autograd's choice; the JVP uses the same weights, so
    VJP and JVP stay adjoint)."""

    name = "maximum"

    def _f(self, a, b):
        self.wa = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
        return np.maximum(a, b)

    def _partials(self):
        return (lambda g: g * self.wa), (lambda g: g * (1.0 - self.wa))


class _Unary(Piece):
    def vjp(self, g):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return (self._d(g),)

    def jvp(self, t):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return self._d(t)


class Sigmoid(_Unary):
    r""":math:`s = 1 / (1 + e^{-a})`, derivative :math:`s (1 - s)`.

    ``1 - s`` is evaluated as :math:`\sigma(-a)` (no cancellation for large a);
    both by ``scipy.special.expit``, which neither overflows nor divides by
    zero."""

    name = "sigmoid"

    def forward(self, a):
        from scipy.special import expit

        self.s, self.c = expit(a), expit(-a)
        return self.s

    def _d(self, g):
        return g * (self.s * self.c)


class SqrtShift(_Unary):
    r""":math:`s = \sqrt{a + \epsilon}`, derivative :math:`1 / (2 s)` (a standard
    deviation from a variance, the running variance of eval mode)."""

    name = "sqrt"

    def __init__(self, eps):
        self.eps = float(eps)

    def forward(self, a):
        with np.errstate(invalid="ignore"):
            self.s = np.sqrt(a + self.eps)
        return self.s

    def _d(self, g):
        return (0.5 * g) / self.s


class View(_Unary):
    """A reshape (to broadcast a per-group or per-channel array against the data)."""

    name = "view"

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, a):
        self.in_shape = np.shape(a)
        return np.reshape(a, self.shape)

    def vjp(self, g):
        return (np.reshape(g, self.in_shape),)

    def jvp(self, t):
        return np.reshape(t, self.shape)


class GroupStd:
    r"""The per-group standard deviation of a bound :class:`~normref.standardize.Standardization`.

    .. math::

        s_g = \sqrt{\sigma_g^2 + \epsilon}, \qquad
        \dot s_g = \frac1n \sum_{i \in g} \hat x_i\, \dot x_i, \qquad
        \bar x_i = \frac{\hat x_i\, \bar s_{g(i)}}{n}

    for eps inside the root, with :math:`\sigma^2` the biased variance (or the
    mean square when the plan does not centre: the formula is the same), from
    the plan's own statistics (its kernel's compensated moments) and its
    :math:`\hat x`.  The value is ``(1 / F) / scale`` of the kernel's factors
    (``rstd = scale F``, scale a power of two), so no tiny reciprocal is formed.
    Shape: the partition's group shape.
    """

    name = "group standard deviation"

    def __init__(self, plan):
        if plan.fixed is not None or plan.eps_outside:
            raise ValueError("GroupStd needs batch statistics with eps inside the root")
        self.plan = plan
        self.params = (plan.names[0],)

    def forward(self):
        p = self.plan
        p.forward()
        gs = p.partition.group_shape
        if p.empty:
            return np.zeros(gs)
        scale, F = p.stats[2], p.stats[3]
        with np.errstate(over="ignore", divide="ignore"):
            return ((1.0 / F) / scale).reshape(gs)

    def _split(self):
        return self.plan.xhat().reshape(self.plan.partition.split_shape)

    def vjp(self, g):
        p = self.plan
        n = max(p.partition.group_size, 1)
        x = self.params[0]
        if p.empty:
            return {x: np.zeros(p.x.shape)}
        with np.errstate(under="ignore"):
            dx = self._split() * (p._on_groups(g) / n)
        return {x: dx.reshape(p.x.shape)}

    def jvp(self, tangents):
        p = self.plan
        gs = p.partition.group_shape
        t = tangents.get(self.params[0])
        if t is None or p.empty:
            return np.zeros(gs)
        S = p.partition.split_shape
        n = max(p.partition.group_size, 1)
        with np.errstate(under="ignore", over="ignore"):
            s = (self._split() * np.reshape(t, S)).sum(axis=p.partition.reduce_axes)
        return (s / n).reshape(gs)


@dataclass
class Step:
    """``out = part(inputs)``.  ``part``: a :class:`Piece` (``inputs`` a tuple of
    node names), a bound Plan-like part (``inputs`` a dict: its parameter name ->
    node), or a zero-argument factory returning either, called when the step runs."""

    out: str
    part: Any
    inputs: Any = ()


class Composite(Plan):
    """A Plan from steps (see the module docstring).

    Parameters
    ----------
    name : the normalizer's name (messages).
    values : ``{parameter name: float64 array}``, the differentiable arguments
        (leaves), ``input`` first.
    steps : list of :class:`Step`, in an order where every input is computed
        before it is used.
    output : the node returned (default: the last step's).
    constants : arrays the forward reads besides ``values`` (running
        statistics in training): the finiteness contract counts them as
        arguments, so a NaN among them is not reported as an overflow.
    on_forward : callback run once after a successful forward (running
        statistics); it may read :meth:`part` and :meth:`node`.
    """

    def __init__(self, name, values, steps, *, output=None, constants=(), on_forward=None):
        self.name = name
        self._values = dict(values)
        self.params = tuple(self._values)
        self.steps = list(steps)
        self.output = output if output is not None else self.steps[-1].out
        self.constants = tuple(c for c in constants if c is not None)
        self.on_forward = on_forward
        self._parts = {}
        self._nodes = {}

    def keep_private(self):
        """Every argument: the pieces keep references to their inputs for the derivatives."""
        return tuple(self.params)

    def inputs_finite(self):
        return all_finite(*self._values.values(), *self.constants)

    def part(self, out):
        """The (bound) part that computed node ``out``."""
        self.forward()
        return self._parts[out]

    def node(self, out):
        """The value of node ``out``."""
        self.forward()
        return self._nodes[out]

    @property
    def output_shape(self):
        return self.value(self.params[0]).shape

    def _forward(self):
        nodes = dict(self._values)
        for step in self.steps:
            part = step.part
            if not isinstance(part, Piece) and not hasattr(part, "vjp") and callable(part):
                part = part()
            if isinstance(part, Piece):
                val = part.forward(*(nodes[i] for i in step.inputs))
            else:
                val = part.forward()
            val = np.asarray(val, dtype=np.float64)
            if step.out != self.output:
                self.check_finite(f"intermediate {step.out!r} ({getattr(part, 'name', '')})", val)
            self._parts[step.out] = part
            nodes[step.out] = val
        self._nodes = nodes
        return nodes[self.output]

    def _ins(self, step):
        if isinstance(self._parts[step.out], Piece):
            return list(step.inputs)
        return list(step.inputs.items())

    def vjp(self, g):
        self.forward()
        bars = {self.output: np.asarray(g, dtype=np.float64)}

        def add(node, grad):
            if grad is None:
                return
            bars[node] = grad if node not in bars else bars[node] + grad

        for step in reversed(self.steps):
            gbar = bars.get(step.out)
            if gbar is None:
                continue
            part = self._parts[step.out]
            if isinstance(part, Piece):
                for node, grad in zip(step.inputs, part.vjp(gbar)):
                    add(node, grad)
            else:
                grads = part.vjp(gbar)
                for param, node in step.inputs.items():
                    add(node, grads.get(param))
        return {n: np.asarray(bars[n], dtype=np.float64) if n in bars else np.zeros(v.shape)
                for n, v in self._values.items()}

    def jvp(self, tangents):
        y = self.forward()
        dots = {n: np.asarray(t, dtype=np.float64) for n, t in tangents.items() if t is not None}
        for step in self.steps:
            part = self._parts[step.out]
            if isinstance(part, Piece):
                ts = [dots.get(i) for i in step.inputs]
                if all(t is None for t in ts):
                    continue
                dots[step.out] = np.asarray(part.jvp(*ts), dtype=np.float64)
            else:
                ts = {p: dots[n] for p, n in step.inputs.items() if n in dots}
                if not ts:
                    continue
                dots[step.out] = np.asarray(part.jvp(ts), dtype=np.float64)
        out = dots.get(self.output)
        return np.zeros(y.shape) if out is None else np.broadcast_to(out, y.shape).copy()
