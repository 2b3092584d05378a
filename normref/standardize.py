"""NOP standardize (and scale-only) with NRR affine recovery, over any partition.

:class:`Standardization` is the one Plan behind batch, instance, layer, group,
RMS, positional, batch-group, ghost-batch and mean-variance norm: a
normalizer module only chooses a :class:`~normref.partition.Partition`, the
operation's options and which arguments are the affine parameters.

For a group of ``n`` values with mean :math:`\\mu` and biased variance
:math:`\\sigma^2`:

.. math::

    \\hat x = (x - \\mu)\\, f(\\sigma^2), \\qquad y = \\gamma \\hat x + \\beta

with :math:`f(v) = (v + \\epsilon)^{-1/2}` (eps inside the root, PyTorch),
:math:`f(v) = 1/(\\sqrt v + \\epsilon)` (eps added to the standard deviation,
ONNX MeanVarianceNormalization), and for scale-only normalization (RMS norm)
:math:`\\mu = 0` and :math:`\\sigma^2 = \\overline{x^2}`.  With fixed (running)
statistics :math:`\\mu, \\sigma^2` are inputs and :math:`\\hat x` is affine in x.

Derivatives (exact): the Jacobian of :math:`\\hat x` with respect to a group
is :math:`A = f\\,(I - [\\text{center}]\\,\\mathbf 1\\mathbf 1^T/n + c\\,\\hat x\\hat x^T/n)`,
symmetric, with :math:`c = 2f'/f^3`: -1 for eps inside the root,
:math:`-(\\sigma+\\epsilon)/\\sigma` for eps on the standard deviation, 0 for
fixed statistics.  Hence

.. math::

    \\bar x = A(\\gamma \\bar y), \\quad \\bar\\gamma = \\textstyle\\sum \\bar y\\hat x,
    \\quad \\bar\\beta = \\textstyle\\sum \\bar y, \\qquad
    \\dot y = \\gamma A \\dot x + \\dot\\gamma \\hat x + \\dot\\beta .

Numerical choices (see :mod:`normref.kernels.standardize`): corrected
two-pass moments with compensated sums, the mean correction subtracted from
``x - mean`` rather than added to the mean, power-of-two rescaling before
squaring for huge or subnormal data; float64 throughout.

Statistics as outputs (``stats_shape``, the normalizers' ``return_stats=True``):
the forward returns ``(y, mean, rstd)`` -- ``(y, rstd)`` for scale-only
normalization -- with :math:`r = f(\\sigma^2)` the multiplier of the group,
both per group reshaped to ``stats_shape``.  The mean is the compensated one
the output is computed with, ``mu_hi + mu_lo / scale`` (one rounding of the
two-term mean: within about an ulp of the exact mean at any offset), and
:math:`r` = ``scale * F``, the kernels' own multiplier.  Their derivatives,
per group of ``n`` values (:math:`c = 2f'/f^3` as above):

.. math::

    \\frac{\\partial \\mu}{\\partial x_j} = \\frac{[\\text{center}]}{n}, \\qquad
    \\frac{\\partial r}{\\partial x_j} = f'(\\sigma^2)\\,\\frac{2 (x_j - \\mu)}{n}
    = \\frac{c\\, r^2}{n}\\, \\hat x_j ,

so the JVPs are the group sums :math:`\\sum \\dot x / n` and
:math:`(c r^2/n) \\sum \\hat x \\dot x` the projection kernel already forms
(compensated), and the VJP adds :math:`\\bar\\mu / n + (c r^2 / n)\\,\\bar r\\,\\hat x`
to :math:`\\bar x` in one kernel pass (``standardize_stats_pullback``).  With fixed statistics the outputs are the running
statistics used (:math:`\\mu` = running mean, :math:`r = (v + \\epsilon)^{-1/2}`),
constant in x: :math:`\\partial \\mu / \\partial \\hat\\mu = 1`,
:math:`\\partial r / \\partial v = -r^3 / 2`.
"""
from __future__ import annotations

import numpy as np

from . import buffers
from .kernels import standardize as K
from .kernels.bands import abs_range
from .numerics import apply_banded, in_band, power_bands
from .registry import Plan

__all__ = ["Standardization", "Affine", "FixedStats"]

_NCHUNKS = 64  # fixed blocks of groups for parameter-gradient partial sums


class Affine:
    """NRR: an affine parameter given by the user, laid out on partition axes."""

    def __init__(self, name, value, partition):
        self.name = name
        self.value = value  # float64, user's shape
        self.flat = np.ascontiguousarray(value).reshape(-1)
        self.partition = partition

    def on_split(self, arr=None):
        """The parameter (or a same-shaped array) broadcastable to the split shape."""
        a = self.value if arr is None else arr
        return np.asarray(a).reshape(self.partition.affine_shape)


class FixedStats:
    """Running statistics used instead of batch statistics (eval mode).

    ``mean`` / ``var`` have a shape that broadcasts (NumPy trailing rules) to
    the partition's group shape, e.g. (C,) against (C,) for batch norm or
    (N, C) for instance norm.  ``names`` are their parameter names when they
    are differentiable (``None`` otherwise).
    """

    def __init__(self, mean, var, names=(None, None)):
        self.mean = mean
        self.var = var
        self.names = names


class Standardization(Plan):
    """A bound standardization call: partition + operation + affine recovery.

    Parameters
    ----------
    x : float64 array, the input (any shape; reshaped to the split shape).
    partition : :class:`~normref.partition.Partition`.
    eps : float.
    center : subtract the mean (False: scale-only, RMS).
    eps_outside : eps added to the standard deviation instead of the variance.
    weight, bias : optional float64 arrays of size ``partition.affine_size``.
    fixed : optional :class:`FixedStats`.
    names : parameter names of (input, weight, bias).
    on_forward : optional callback ``on_forward(plan)`` run once after the
        forward of a non-empty input (running-statistics updates).
    stats_shape : optional shape (of ``prod(partition.group_shape)`` elements):
        the forward then returns ``(y, mean, rstd)`` (``(y, rstd)`` when not
        centred), the statistics reshaped to it (module docstring).
    """

    bands_cotangent = True  # vjp: the projection kernel measures the cotangent's range

    def __init__(self, x, partition, *, eps, center=True, eps_outside=False,
                 weight=None, bias=None, fixed=None,
                 names=("input", "weight", "bias"), on_forward=None, stats_shape=None):
        self.x = x
        self.partition = partition
        self.name = partition.name
        self.eps = float(eps)
        self.center = bool(center)
        self.eps_outside = bool(eps_outside)
        self.fixed = fixed
        self.names = names
        self.weight = None if weight is None else Affine(names[1], weight, partition)
        self.bias = None if bias is None else Affine(names[2], bias, partition)
        values = {names[0]: x}
        if self.weight is not None:
            values[names[1]] = weight
        if self.bias is not None:
            values[names[2]] = bias
        if fixed is not None:
            for nm, arr in zip(fixed.names, (fixed.mean, fixed.var)):
                if nm is not None:
                    values[nm] = arr
        self._values = values
        self.params = tuple(values)
        self.empty = x.size == 0
        self.on_forward = None if self.empty else on_forward
        self._private = False
        self.stats_shape = None
        if stats_shape is not None:
            self._want_stats(tuple(int(n) for n in stats_shape))

    def _want_stats(self, shape):
        """Return the statistics too (``stats_shape``), after checking they exist."""
        p = self.partition
        G = int(np.prod(p.group_shape, dtype=np.int64))
        if int(np.prod(shape, dtype=np.int64)) != G:
            raise ValueError(f"stats_shape {shape} does not hold the {G} groups of {p.name}")
        if G and p.group_size == 0 and self.fixed is None:
            raise ValueError(
                f"return_stats=True: the {G} groups of {p.name} are empty (input shape "
                f"{self.x.shape}): the mean and rstd of no values are undefined")
        self.stats_shape = shape
        self.output_names = ("output", "mean", "rstd") if self.center else ("output", "rstd")

    @property
    def output_shape(self):
        if self.stats_shape is None:
            return self.x.shape
        return (self.x.shape,) + (self.stats_shape,) * (len(self.output_names) - 1)

    def keep_private(self):
        """The input is copied by the forward kernel itself (see :class:`Plan`)."""
        self._private = True
        return tuple(n for n in self.params if n != self.names[0])

    # -- forward ------------------------------------------------------------
    def _forward(self):
        x = self.x
        if self.empty:
            self.stats = None
            return self._with_stats(np.zeros(x.shape))
        layout = self.partition.layout()
        self.layout = layout
        G = layout.n_groups
        xf = layout.flat(x)
        self._xf = xf
        buf, to_S = layout.empty()
        mu_hi, mu_lo, scale, F, c, var = (np.empty(G) for _ in range(6))
        fs = 1.0
        if self.fixed is not None:
            fm, fv, rstd = self._fixed_arrays()
            if max(np.abs(fm).max(initial=0.0), np.abs(xf).max(initial=0.0)) >= 2.0 ** 1022:
                fs = 0.5  # x / 2 - mean / 2 cannot overflow
        else:
            fm = rstd = np.zeros(1)
        gamma = self.weight.flat if self.weight is not None else np.zeros(1)
        beta = self.bias.flat if self.bias is not None else np.zeros(1)
        # a private copy of the input for derivatives taken after the call returns
        # (keep_private), written by the kernel while each row is hot; the flat
        # buffer is already private when the layout had to copy
        copy_x = self._private and np.shares_memory(xf, x)
        x_copy = buffers.scratch(xf.size) if copy_x else np.zeros(1)
        nonfinite = np.empty(G, dtype=np.int64)
        K.standardize_forward(
            xf, layout.shape5, layout.strides, layout.param_strides, gamma, beta,
            self.weight is not None, self.bias is not None,
            self.center, self.eps, self.eps_outside, fm, rstd, fs, self.fixed is not None,
            buf, mu_hi, mu_lo, scale, F, c, var, x_copy, copy_x, nonfinite,
        )
        if copy_x:
            self._xf = x_copy
            self._values[self.names[0]] = self.x = x_copy.reshape(x.shape)
        if self.fixed is not None:
            var = fv.copy()
        y = to_S(buf).reshape(x.shape)
        self.stats = (mu_hi, mu_lo, scale, F, c, var)
        self._check_denominators()
        if not nonfinite.any():
            self.certify_finite(y)
        return self._with_stats(y)

    def _fixed_arrays(self):
        """The fixed statistics per group, flat: ``(mean, var, (var + eps)^-1/2)``."""
        gs = self.partition.group_shape
        fm = np.ascontiguousarray(np.broadcast_to(self.fixed.mean, gs)).reshape(-1)
        fv = np.ascontiguousarray(np.broadcast_to(self.fixed.var, gs)).reshape(-1)
        with np.errstate(all="ignore"):
            t = fv + self.eps
            # var + eps overflows: (var / 4 + eps / 4)^-1/2 / 2, exact scalings
            rstd = np.where(np.isinf(t) & np.isfinite(fv), 0.5 / np.sqrt(0.25 * fv + 0.25 * self.eps),
                            1.0 / np.sqrt(t))
        return fm, fv, rstd

    def _with_stats(self, y):
        """``y``, or ``(y, mean, rstd)`` / ``(y, rstd)`` when the statistics are outputs."""
        if self.stats_shape is None:
            return y
        if self.fixed is not None:
            fm, _, rstd = self._fixed_arrays()
            mean = np.array(fm)  # (a private copy: never the caller's running_mean)
        elif self.empty:
            mean = rstd = np.zeros(0)
        else:
            mean, rstd = self._flat_mean(), self.stats[2] * self.stats[3]
        stats = (mean, rstd) if self.center else (rstd,)
        return (y,) + tuple(a.reshape(self.stats_shape) for a in stats)

    def _check_denominators(self):
        """A finite group whose denominator is not positive is a ValueError.

        (NaN / inf data or running statistics propagate to their group
        instead: the input is not finite.)
        """
        mu_hi, mu_lo, scale, F, c, var = self.stats
        bad = ~np.isfinite(F) & np.isfinite(var) & np.isfinite(mu_hi)
        if not bad.any():
            return
        g = int(np.flatnonzero(bad)[0])
        idx = tuple(int(i) for i in np.unravel_index(g, self.partition.group_shape))
        if self.fixed is not None:
            raise ValueError(
                f"running_var + eps is not positive in group {idx} of {self.partition.name} "
                f"(running_var {float(var[g])!r}, eps={self.eps!r}): the normalization "
                f"(x - running_mean) / sqrt(running_var + eps) is undefined"
            )
        what = "std + eps" if self.eps_outside else "var + eps"
        raise ValueError(
            f"{what} is not positive in group {idx} of "
            f"{self.partition.name} (eps={self.eps!r}, group variance "
            f"{float(var[g])!r}): the normalization is undefined (0/0 for a "
            f"constant group with eps=0); use eps > 0"
        )

    # -- statistics for callers (running-stat updates, eval) ----------------
    def _ensure_stats(self):
        if getattr(self, "stats", None) is None:
            self.forward()
        if self.stats is None:
            raise ValueError("no statistics: the input is empty")

    def _flat_mean(self):
        """The compensated mean per group: the two-term ``mu_hi + mu_lo`` rounded once."""
        mu_hi, mu_lo, scale = self.stats[0], self.stats[1], self.stats[2]
        return mu_hi + mu_lo / scale

    def group_mean(self):
        """Per-group mean, shape ``partition.group_shape``."""
        self._ensure_stats()
        return self._flat_mean().reshape(self.partition.group_shape)

    def group_var(self):
        """Per-group biased variance (mean square if not centered)."""
        self._ensure_stats()
        return self.stats[5].reshape(self.partition.group_shape)

    def group_rstd(self):
        """Per-group multiplier ``1 / sqrt(var + eps)`` (or its eps-on-std variant)."""
        self._ensure_stats()
        return (self.stats[2] * self.stats[3]).reshape(self.partition.group_shape)

    def xhat(self):
        """The normalized input (before affine), shape of x."""
        if not hasattr(self, "_xhat"):
            self.forward()
            if self.empty:
                self._xhat = np.zeros(self.x.shape)
            else:
                buf, to_S = self.layout.empty()
                mu_hi, mu_lo, scale, F, _, _ = self.stats
                L = self.layout
                K.standardize_xhat(self._xf, L.shape5, L.strides, mu_hi, mu_lo, scale, F, buf)
                self._xhat = to_S(buf).reshape(self.x.shape)
        return self._xhat

    # -- derivatives --------------------------------------------------------
    def _project(self, v, with_gamma, param_grads, gamma=None):
        """A (gamma v) per group, plus group sums and optional parameter partials.

        ``gamma`` (flat, optional) replaces the weight (a power-of-two band of it).
        Also returns ``(finite, top, bottom)``: whether the kernel wrote only finite
        values, and the largest and smallest nonzero ``|v|`` it read."""
        layout = self.layout
        G = layout.n_groups
        vf = layout.flat(v)
        buf, to_S = layout.empty()
        sum_v, sum_vx = np.empty(G), np.empty(G)
        nonfinite = np.empty(G, dtype=np.int64)
        vrange = np.empty((G, 2))
        P = max(self.partition.affine_size, 1)
        nchunks = min(G, _NCHUNKS)
        if param_grads:
            pg_g, pg_b = np.zeros((nchunks, P)), np.zeros((nchunks, P))
        else:
            pg_g = pg_b = np.zeros((1, 1))
        use_gamma = with_gamma and self.weight is not None
        if gamma is None or not use_gamma:
            gamma = self.weight.flat if use_gamma else np.zeros(1)
        mu_hi, mu_lo, scale, F, c, _ = self.stats
        center = self.center and self.fixed is None
        K.standardize_project(
            self._xf, layout.shape5, layout.strides, layout.param_strides, gamma, use_gamma,
            vf, center, mu_hi, mu_lo, scale, F, c, buf, sum_v, sum_vx, param_grads, nchunks,
            pg_g, pg_b, nonfinite, vrange,
        )
        out = to_S(buf)
        tops = vrange[:, 0]
        top = np.nan if np.isnan(tops).any() else float(tops.max())
        checks = (not nonfinite.any(), top, float(vrange[:, 1].min()))
        return out.reshape(self.x.shape), sum_v, sum_vx, pg_g, pg_b, checks

    def vjp(self, cotangent):
        if self.stats_shape is None:
            # the projection kernel measures the cotangent's range as it reads it: band
            # (and redo) only when that range needs it
            grads = self._vjp_output(cotangent, check_band=True)
            return grads if grads is not None else apply_banded(self._vjp_output, [cotangent])
        dy, *dstats = cotangent
        self.forward()
        grads = (self._vjp_output(dy) if dy is not None
                 else {k: np.zeros(v.shape) for k, v in self._values.items()})
        self._vjp_stats(dict(zip(self.output_names[1:], dstats)), grads)
        return grads

    def _vjp_output(self, dy, check_band=False):
        self.forward()
        nx, nw, nb = self.names
        if self.empty:
            return {k: np.zeros(v.shape) for k, v in self._values.items()}
        bands = [(0, None)]
        if self.weight is not None:
            top, bottom = abs_range(self.weight.flat)
            if not (top <= 2.0 ** 64 and (bottom >= 2.0 ** -64 or top == 0.0)):
                # the kernel forms gamma * dy: a weight far outside the usual range
                # would over- or underflow it.  A(gamma dy) is linear in gamma: split
                # gamma into power-of-two bands (numerics.power_bands) and sum
                bands = [(k, band) for k, (band,) in power_bands([self.weight.flat])]
        grads = None
        for k, gamma in bands:
            need = [] if check_band and grads is None else None
            g = self._vjp(dy, gamma, with_params=grads is None, need_band=need)
            if need:
                return None
            if k:
                with np.errstate(over="ignore"):
                    g = {n: np.ldexp(v, k) if n not in (nw, nb) else v for n, v in g.items()}
            if grads is None:
                grads = g
            else:  # the weight and bias gradients do not involve gamma: from the first band
                for n, v in g.items():
                    grads[n] = grads[n] + v
        return grads

    def _vjp(self, dy, gamma=None, with_params=True, need_band=None):
        nx, nw, nb = self.names
        want = with_params and (self.weight is not None or self.bias is not None)
        dx, sum_v, sum_vx, pg_g, pg_b, (finite, top, bottom) = self._project(dy, True, want,
                                                                             gamma)
        if need_band is not None and not in_band(top, bottom):
            need_band.append(True)
            return None
        if finite:
            self.certify_finite(dx)
        grads = {nx: dx}
        if want and self.weight is not None:
            grads[nw] = pg_g.sum(axis=0).reshape(self.weight.value.shape)
        if want and self.bias is not None:
            grads[nb] = pg_b.sum(axis=0).reshape(self.bias.value.shape)
        if self.fixed is not None:
            rstd = self.stats[2] * self.stats[3]
            per_group = (-rstd * sum_v, -0.5 * rstd * rstd * sum_vx)
            for nm, arr, g in zip(self.fixed.names, (self.fixed.mean, self.fixed.var), per_group):
                if nm is not None:
                    grads[nm] = _sum_to(g.reshape(self.partition.group_shape), arr.shape)
        return grads

    def _rstd_slope(self, w):
        """``w c r^2 / n`` per group (true units): the derivative of rstd along xhat, times w.

        The kernels keep ``c F^2`` in scaled units (``r = scale F``), so
        ``c r^2 = (c F^2) scale^2``; ``w`` is multiplied in first (a small
        cotangent or tangent keeps a huge ``r^2`` in range), and a group with
        ``w = 0`` (a constant group: xhat = 0) gets 0 even where ``c F^2`` overflows.
        """
        _, _, scale, _, c, _ = self.stats
        with np.errstate(over="ignore", invalid="ignore"):
            k = (((w * c) * scale) * scale) / self.partition.group_size
        return np.where(w != 0.0, k, 0.0)

    def _vjp_stats(self, cot, grads):
        """Add the pullback of the statistics outputs (``cot``: name -> cotangent or None)."""
        dm, dr = cot.get("mean"), cot.get("rstd")
        gs = self.partition.group_shape
        if self.fixed is not None:  # the running statistics themselves: constant in x
            _, _, rstd = self._fixed_arrays()
            nm, nv = self.fixed.names
            if dm is not None and nm is not None:
                grads[nm] = grads[nm] + _sum_to(np.reshape(dm, gs), self.fixed.mean.shape)
            if dr is not None and nv is not None:
                g = ((-0.5 * np.reshape(dr, -1)) * rstd) * rstd * rstd
                grads[nv] = grads[nv] + _sum_to(g.reshape(gs), self.fixed.var.shape)
            return
        if self.empty or (dm is None and dr is None):
            return
        G = self.layout.n_groups
        a = np.zeros(G) if dm is None else np.reshape(dm, -1) / self.partition.group_size
        k = np.zeros(G) if dr is None else self._rstd_slope(np.reshape(dr, -1))
        nx, L = self.names[0], self.layout
        # one pass, xhat formed on the fly; the gradient is this pullback's own array,
        # added to in place (its flat buffer is a copy only for transposed layouts)
        gf = L.flat(grads[nx])
        mu_hi, mu_lo, scale, F, _, _ = self.stats
        K.standardize_stats_pullback(self._xf, L.shape5, L.strides, mu_hi, mu_lo, scale, F,
                                     a, k, gf)
        grads[nx] = L.empty()[1](gf).reshape(self.x.shape)

    def _on_groups(self, per_group):
        """A per-group vector broadcastable to the split shape."""
        p = self.partition
        shape = tuple(n if a in p.group_axes else 1 for a, n in enumerate(p.split_shape))
        return np.asarray(per_group).reshape(p.group_shape).reshape(shape)

    def jvp(self, tangents):
        self.forward()
        ty, sums = self._jvp_output(tangents)
        if self.stats_shape is None:
            return ty
        return (ty,) + self._jvp_stats(tangents, sums)

    def _jvp_stats(self, tangents, sums):
        """Tangents of the statistics outputs; ``sums``: the group sums of the input
        tangent and of it times xhat (None without an input tangent)."""
        gs = self.partition.group_shape
        G = int(np.prod(gs, dtype=np.int64))
        tm, tr = np.zeros(G), np.zeros(G)
        if self.fixed is not None:
            _, _, rstd = self._fixed_arrays()
            nm, nv = self.fixed.names
            if nm is not None and nm in tangents:
                tm = np.broadcast_to(tangents[nm], gs).reshape(-1).copy()
            if nv is not None and nv in tangents:
                tv = np.broadcast_to(tangents[nv], gs).reshape(-1)
                tr = ((-0.5 * tv) * rstd) * rstd * rstd
        elif sums is not None:
            sum_v, sum_vx = sums
            tm = sum_v / self.partition.group_size
            tr = self._rstd_slope(sum_vx)
        out = (tm, tr) if self.center else (tr,)
        return tuple(a.reshape(self.stats_shape) for a in out)

    def _jvp_output(self, tangents):
        """``(output tangent, group sums of the input tangent or None)``."""
        nx, nw, nb = self.names
        ty = np.zeros(self.x.shape)
        sums = None
        if self.empty:
            return ty, sums
        S = self.partition.split_shape
        ty_s = ty.reshape(S)
        if nx in tangents:
            ax, sum_v, sum_vx, _, _, _ = self._project(tangents[nx], False, False)
            sums = (sum_v, sum_vx)
            ax = ax.reshape(S)
            if self.weight is not None:
                ax = ax * self.weight.on_split()
            ty_s += ax
        if nw in tangents and self.weight is not None:
            ty_s += self.xhat().reshape(S) * self.weight.on_split(tangents[nw])
        if nb in tangents and self.bias is not None:
            ty_s += self.bias.on_split(tangents[nb])
        if self.fixed is not None:
            rstd = self.stats[2] * self.stats[3]
            gs = self.partition.group_shape
            tm_name, tv_name = self.fixed.names
            extra = np.zeros(S)
            if tm_name is not None and tm_name in tangents:
                tm = np.broadcast_to(tangents[tm_name], gs).reshape(-1)
                extra = extra - self._on_groups(rstd * tm)
            if tv_name is not None and tv_name in tangents:
                tv = np.broadcast_to(tangents[tv_name], gs).reshape(-1)
                extra = extra - self.xhat().reshape(S) * self._on_groups(0.5 * rstd * rstd * tv)
            if self.weight is not None:
                extra = extra * self.weight.on_split()
            ty_s += extra
        return ty, sums

    def jacobian(self, name):
        if name != self.names[0] or self.empty:
            return super().jacobian(name)
        # closed form, block by block: J = diag(gamma) A on each group
        self.forward()
        p = self.partition
        S = p.split_shape
        G = int(np.prod(p.group_shape, dtype=np.int64))
        n = p.group_size
        order = tuple(p.group_axes) + p.reduce_axes
        idx = np.ascontiguousarray(np.arange(self.x.size).reshape(S).transpose(order).reshape(G, n))
        xh = self.xhat().reshape(-1)[idx]
        if self.weight is not None:
            gam = np.broadcast_to(self.weight.on_split(), S).reshape(-1)[idx]
        else:
            gam = np.ones((G, n))
        mu_hi, mu_lo, scale, F, c, _ = self.stats
        center = 1.0 if (self.center and self.fixed is None) else 0.0
        J = np.zeros((self.x.size, self.x.size))
        # c f in true units: (c f^2) / F * scale (0 without a rank-one term)
        with np.errstate(divide="ignore", invalid="ignore"):
            cf = np.where(c != 0.0, c / F, 0.0) * scale
        K.standardize_jacobian(idx, xh, gam, scale * F, cf, center, J)
        J = J.reshape(self.x.shape + self.x.shape)
        if self.stats_shape is None:
            return J
        return (J,) + self._stats_jacobian(idx, xh)

    def _stats_jacobian(self, idx, xh):
        """Closed-form Jacobians of the statistics outputs w.r.t. the input."""
        G, n = idx.shape
        rows = np.arange(G)[:, None]
        Jm, Jr = np.zeros((G, self.x.size)), np.zeros((G, self.x.size))
        if self.fixed is None:
            Jm[rows, idx] = 1.0 / n
            with np.errstate(over="ignore", invalid="ignore"):
                Jr[rows, idx] = np.where(xh != 0.0, xh * self._rstd_slope(np.ones(G))[:, None], 0.0)
        out = (Jm, Jr) if self.center else (Jr,)
        return tuple(a.reshape(self.stats_shape + self.x.shape) for a in out)


def _sum_to(a, shape):
    """Sum ``a`` over leading axes (and size-1 axes) down to ``shape``."""
    lead = a.ndim - len(shape)
    if lead > 0:
        a = a.sum(axis=tuple(range(lead)))
    keep = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    if keep:
        a = a.sum(axis=keep, keepdims=True)
    return a.reshape(shape)
