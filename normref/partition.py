"""NAP, normalization area partitioning: which elements share statistics.

A :class:`Partition` says how the input is split into groups: the input is
reshaped to a *split shape* ``S`` (a view for contiguous input), some axes of
``S`` index the groups and the others are reduced.  For NCHW input with
``HW = H*W``:

================== ======================= ============ =============
normalizer          split shape S           group axes   affine axes
================== ======================= ============ =============
batch norm          (N, C, HW)              (1,)         (1,)
layer norm          (rows, F)               (0,)         (1,)
instance norm       (N, C, HW)              (0, 1)       (1,)
group norm          (N, G, C/G, HW)         (0, 1)       (1, 2)
positional norm     (N, C, HW)              (0, 2)       --
batch-group norm    (N, G, C/G, HW)         (1,)         (1, 2)
ghost batch norm    (N/v, v, C, HW)         (0, 2)       (2,)
================== ======================= ============ =============

:class:`Layout` turns ``S``, the group axes and the affine axes into the
block shape ``(G1, G2, R1, R2, R3)`` and element strides the kernels of
:mod:`normref.kernels.standardize` iterate over: adjacent axes are merged where
both the data and the affine parameter allow it, rows (the last reduced
block) are contiguous, and the affine parameter is addressed by its own
strides (zero where it does not vary).  A partition whose reduced axes are
not trailing (positional norm) runs on a transposed copy.  The plan depends
only on the shapes, never on the input's memory layout: every input is
handed to the kernels as a C-ordered buffer (copied if it is not one), so a
transposed, negative-stride or channels-last input gives results
bit-identical to its contiguous copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Partition", "Layout"]


@dataclass(frozen=True)
class Partition:
    """Groups of a split shape: ``x.reshape(split_shape)``, group axes, affine axes."""

    name: str
    split_shape: tuple
    group_axes: tuple
    affine_axes: tuple = ()

    @property
    def reduce_axes(self):
        return tuple(a for a in range(len(self.split_shape)) if a not in self.group_axes)

    @property
    def group_shape(self):
        """Shape of the array of groups (group axes of S, in order)."""
        return tuple(self.split_shape[a] for a in self.group_axes)

    @property
    def group_size(self):
        return int(np.prod([self.split_shape[a] for a in self.reduce_axes], dtype=np.int64))

    @property
    def affine_shape(self):
        """Shape of an affine parameter in split coordinates (1 on other axes)."""
        return tuple(
            n if a in self.affine_axes else 1 for a, n in enumerate(self.split_shape)
        )

    @property
    def affine_size(self):
        return int(np.prod([self.split_shape[a] for a in self.affine_axes], dtype=np.int64))

    def layout(self):
        return Layout(self)


def _c_strides(shape):
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


def _blocks(axes, shape, strides_list):
    """Merge adjacent axes (in the given order) where every array allows it.

    Returns a list of blocks ``[axes...]``; a block's axes are consecutive in
    ``axes`` and mergeable: stride[a] == shape[b] * stride[b] for each pair.
    """
    blocks = []
    for a in axes:
        if shape[a] == 1:
            continue
        if blocks:
            b_prev = blocks[-1][-1]
            if all(st[b_prev] == shape[a] * st[a] for st in strides_list):
                blocks[-1].append(a)
                continue
        blocks.append([a])
    return blocks


def _fits(gb, rb, cst, pst):
    """At most 2 group and 3 reduce blocks, rows contiguous, affine constant
    or contiguous along rows."""
    if len(gb) > 2 or len(rb) > 3:
        return False
    if rb:
        inner = rb[-1][-1]
        return cst[inner] == 1 and pst[inner] in (0, 1)
    return True


class Layout:
    """The 5-D kernel view of one partition (see the module docstring).

    Data arrays (input, output, cotangents, tangents) are handed to kernels
    as flat C-contiguous buffers of the split shape (or of its transpose in
    the rare fallback), all sharing the element strides ``strides``;
    ``shape5`` is the block shape ``(G1, G2, R1, R2, R3)`` and
    ``param_strides`` index the flattened affine parameter.
    """

    def __init__(self, partition: Partition):
        self.partition = partition
        S = tuple(int(n) for n in partition.split_shape)
        self.S = S
        g_axes = tuple(partition.group_axes)
        r_axes = partition.reduce_axes
        cst = _c_strides(S)
        pst_full = _c_strides(partition.affine_shape)
        pst = tuple(pst_full[a] if a in partition.affine_axes else 0 for a in range(len(S)))
        gb = _blocks(g_axes, S, [cst, pst])
        rb = _blocks(r_axes, S, [cst, pst])
        self.order = None
        shape_T, cst_T, pst_T = S, cst, pst
        if not _fits(gb, rb, cst, pst):
            # partitions whose reduced axes are not trailing (positional norm) or
            # interleave too much: work on a transposed copy, reduced axes last
            order = g_axes + r_axes
            self.order = order
            shape_T = tuple(S[a] for a in order)
            cst_T = _c_strides(shape_T)
            pst_T = tuple(pst[a] for a in order)
            ng = len(g_axes)
            gb = _blocks(tuple(range(ng)), shape_T, [cst_T, pst_T])
            rb = _blocks(tuple(range(ng, len(shape_T))), shape_T, [cst_T, pst_T])
            if not _fits(gb, rb, cst_T, pst_T):
                raise ValueError(
                    f"partition {partition.name} of split shape {S} with affine axes "
                    f"{partition.affine_axes} does not fit the 5-D kernel view"
                )
        self._shape_T = shape_T
        gb = [[]] * (2 - len(gb)) + gb
        rb = [[]] * (3 - len(rb)) + rb
        blocks = gb + rb
        self.shape5 = np.array(
            [int(np.prod([shape_T[a] for a in blk], dtype=np.int64)) if blk else 1 for blk in blocks],
            dtype=np.int64,
        )
        self.strides = np.array([cst_T[blk[-1]] if blk else 0 for blk in blocks], dtype=np.int64)
        self.param_strides = np.array([pst_T[blk[-1]] if blk else 0 for blk in blocks], dtype=np.int64)
        self.n_groups = int(self.shape5[0] * self.shape5[1])

    def flat(self, arr):
        """Flat C-ordered float64 buffer of an array of shape S (copied if needed)."""
        arr = np.asarray(arr, dtype=np.float64).reshape(self.S)
        if self.order is not None:
            arr = arr.transpose(self.order)
        return np.ascontiguousarray(arr).reshape(-1)

    def empty(self):
        """A new flat output buffer and a function turning it into shape S."""
        buf = np.empty(int(np.prod(self._shape_T, dtype=np.int64)))
        if self.order is None:
            return buf, lambda b: b.reshape(self.S)
        inv = np.argsort(self.order)
        return buf, lambda b: b.reshape(self._shape_T).transpose(inv)
