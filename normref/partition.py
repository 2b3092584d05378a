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

:class:`Layout` turns ``S``, the group axes and the affine axes into the 5-D
views ``(G1, G2, R1, R2, R3)`` the kernels of :mod:`normref.kernels.standardize`
iterate over, merging adjacent axes where the memory layout allows and
indexing the affine parameters through a zero-stride index view.  The merge
plan depends only on the shapes, never on the input's memory layout: an input
whose strides do not fit the plan is copied to C order first, so a transposed,
negative-stride or channels-last input gives results bit-identical to its
contiguous copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

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


class Layout:
    """The 5-D kernel view of one partition (see the module docstring)."""

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
        self.transposed = len(gb) > 2 or len(rb) > 3
        if self.transposed:
            # rare (high-rank interleaved partitions): work on a transposed copy
            order = g_axes + r_axes
            self.order = order
            tS = tuple(S[a] for a in order)
            tcst = _c_strides(tS)
            tpst = tuple(pst[a] for a in order)
            ng = len(g_axes)
            gb = _blocks(tuple(range(ng)), tS, [tcst])
            rb = _blocks(tuple(range(ng, len(tS))), tS, [tcst])
            self._pidx_full = np.ascontiguousarray(
                as_strided(
                    np.arange(max(partition.affine_size, 1), dtype=np.int64),
                    tS,
                    tuple(8 * s for s in tpst),
                )
            )
            self._shape_T = tS
        else:
            self.order = None
            self._shape_T = S
        gb = [[]] * (2 - len(gb)) + gb
        rb = [[]] * (3 - len(rb)) + rb
        self.blocks = gb + rb
        shape_T = self._shape_T
        self.shape5 = tuple(
            int(np.prod([shape_T[a] for a in blk], dtype=np.int64)) if blk else 1
            for blk in self.blocks
        )
        if self.transposed:
            self.pidx5 = self._view_raw(self._pidx_full)
        else:
            self.pidx5 = as_strided(
                np.arange(max(partition.affine_size, 1), dtype=np.int64),
                self.shape5,
                tuple(8 * (pst[blk[-1]] if blk else 0) for blk in self.blocks),
                writeable=False,
            )
        self.n_groups = self.shape5[0] * self.shape5[1]

    # -- views ------------------------------------------------------------
    def _fits(self, arr):
        for blk in self.blocks:
            for a, b in zip(blk, blk[1:]):
                if arr.strides[a] != arr.shape[b] * arr.strides[b]:
                    return False
        return True

    def _view_raw(self, arr):
        strides = tuple(arr.strides[blk[-1]] if blk else 0 for blk in self.blocks)
        return as_strided(arr, self.shape5, strides, writeable=arr.flags.writeable)

    def view(self, arr):
        """5-D kernel view of an array of shape S (copied to C order if needed)."""
        arr = np.asarray(arr, dtype=np.float64).reshape(self.S)
        if self.transposed:
            arr = np.ascontiguousarray(arr.transpose(self.order))
        elif not self._fits(arr):
            arr = np.ascontiguousarray(arr)
        return self._view_raw(arr)

    def empty(self):
        """A new output array of shape S and its 5-D view."""
        if self.transposed:
            t = np.empty(self._shape_T)
            inv = np.argsort(self.order)
            return t.transpose(inv), self._view_raw(t)
        out = np.empty(self.S)
        return out, self._view_raw(out)

    def groups(self, per_group):
        """Reshape a per-group vector (length G1*G2) to the partition's group shape."""
        return np.asarray(per_group).reshape(self.partition.group_shape)
