r"""The taxonomy of Huang et al. (survey, arXiv:2009.12836) as data: NAP x NOP x NRR.

A normalizer of activations is decomposed into

* :class:`Area` (NAP, normalization area partitioning): which elements share
  statistics, and whether they mix the samples of a batch;
* :class:`Operation` (NOP, normalization operation): what is done to a group --
  subtract a mean or not, divide by a scale, decorrelate (whiten);
* :class:`Recovery` (NRR, normalized representation recovery): what follows
  :math:`\hat x` -- an affine map, a coloring matrix, a clipped correction, a
  threshold.

Each is a frozen value with an enumerated ``kind``, the traits suites query
(``Operation.centres``, ``Area.batch``, ...), parameters, and the prose
``python -m normref list`` prints (``str(value)``).  Suites ask traits
(``spec.centres``, ``spec.whitening``) instead of keeping lists of names.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["AreaKind", "Area", "OpKind", "Operation", "RecoveryKind", "Recovery"]


class AreaKind(enum.Enum):
    """How the elements sharing one set of statistics are chosen (NAP)."""

    BATCH = "batch"                #: (N, spatial) per channel
    BATCH_GROUP = "batch-group"    #: (N, C/G, spatial) per group of channels
    GHOST_BATCH = "ghost-batch"    #: (virtual batch, spatial) per (chunk, channel)
    LAYER = "layer"                #: the trailing axes of one sample
    INSTANCE = "instance"          #: spatial per (n, c)
    GROUP = "group"                #: (C/G, spatial) per (n, g)
    POSITIONAL = "positional"      #: C per (n, position)
    CHANNEL_WINDOW = "channel-window"  #: a window of channels at each (n, position)
    AXES = "axes"                  #: the axes the caller names
    WEIGHT = "weight"              #: a slice of a weight tensor
    USER = "user"                  #: declared by a user's own normalizer


@dataclass(frozen=True)
class Area:
    """NAP: the partition.  ``batch``: the statistics mix the samples of a batch
    (so an output depends on the other samples, and training and eval differ)."""

    kind: AreaKind
    prose: str
    batch: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self):
        return self.prose


class OpKind(enum.Enum):
    """What is done to one group (NOP)."""

    STANDARDIZE = "standardize"    #: (x - mean) / scale
    SCALE = "scale"                #: x / scale, no mean subtracted (RMS, Lp, LRN)
    WHITEN = "whiten"              #: (x - mean) decorrelated by Sigma^(-1/2) or a factor of it
    COMPOSED = "composed"          #: built from other operations (EvoNorm)
    USER = "user"                  #: declared by a user's own normalizer


@dataclass(frozen=True)
class Operation:
    """NOP.  ``centres``: a mean is subtracted (the output is invariant to a shift
    of each group, and float rounding grows with the offset); ``whitens``: the
    group's covariance, not only its variance, is normalized."""

    kind: OpKind
    prose: str
    centres: bool
    whitens: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self):
        return self.prose


class RecoveryKind(enum.Enum):
    """What follows the normalized representation (NRR)."""

    NONE = "none"
    AFFINE = "affine"                          #: gamma x + beta
    SCALE = "scale"                            #: gamma x (a gain, no shift)
    CONDITIONAL_AFFINE = "conditional affine"  #: gamma, beta per sample (AdaIN, CBN)
    COLORING = "coloring"                      #: a matrix per group
    RENORM = "renorm"                          #: batch renorm's r x + d, constants in derivatives
    THRESHOLD = "threshold"                    #: max(y, tau) (TLU)


@dataclass(frozen=True)
class Recovery:
    """NRR: the recoveries a normalizer offers (any of ``kinds``, by its arguments)."""

    kinds: tuple
    prose: str

    def __str__(self):
        return self.prose

    @property
    def has_affine(self):
        return any(k in (RecoveryKind.AFFINE, RecoveryKind.SCALE, RecoveryKind.COLORING,
                         RecoveryKind.CONDITIONAL_AFFINE) for k in self.kinds)
