"""numba kernels (options :data:`~normref.kernels._dispatch.JIT`: ``cache=True``,
``fastmath=False``, ``error_model="numpy"``; parallel over groups).

numba's on-disk cache and helpers in other modules.  numba keys a cached
function by its own source file only: the index file (``*.nbi``, beside the
compiled ``*.nbc``) holds a stamp of that file (a hash of its contents in
recent numba), and an entry is reused while the stamp matches.  A kernel that
calls a jitted helper of another module -- the pair arithmetic of
:mod:`normref.kernels.scaled` -- has the helper's machine code inside its own
entry, so an edit to the helper alone would be served stale.

:func:`restamp` closes that gap: it appends :data:`SOURCE_DIGEST`, a hash of
the source of every module of this package computed once at import, to the
stamp numba compares, for every cached dispatcher defined in a module.  An
entry saved under any other set of sources -- before an edit, or after it by a
process that still runs the older code -- is then stale to numba itself,
recompiled and overwritten; nothing is deleted, no file is added, and where
numba caches (``__pycache__``, ``NUMBA_CACHE_DIR``, ...) stays numba's
business.  Every kernel module that calls jitted functions of a sibling module
ends with ``restamp(globals())``.  The stamp is numba's
``Dispatcher._cache._cache_file._source_stamp``; tests/test_kernel_cache.py
checks that it is there and that an edit of a helper is picked up.  Nothing is
compiled or loaded here (importing normref compiles nothing).
"""
from __future__ import annotations

import hashlib
import os

__all__ = ["SOURCE_DIGEST", "restamp"]


def _source_digest():
    """SHA-256 of the names and contents of the ``*.py`` files of this package."""
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        for name in sorted(os.listdir(here)):
            if name.endswith(".py"):
                with open(os.path.join(here, name), "rb") as f:
                    h.update(b"%s\0%d\0" % (name.encode(), os.fstat(f.fileno()).st_size))
                    h.update(f.read())
    except OSError:  # sources not readable as files: numba's own stamp only
        return ""
    return h.hexdigest()


#: hash of the sources of normref.kernels, part of every restamped cache entry's stamp
SOURCE_DIGEST = _source_digest()


def restamp(namespace):
    """Key numba's cache of the dispatchers defined in a module's ``namespace``
    (``njit`` functions and both builds of a :class:`~normref.kernels._dispatch.Kernel`)
    to :data:`SOURCE_DIGEST` as well as to their own file.  Idempotent; a
    dispatcher without an on-disk cache is left alone."""
    module = namespace["__name__"]
    for obj in list(namespace.values()):
        for disp in (obj, getattr(obj, "serial", None), getattr(obj, "parallel", None)):
            if getattr(getattr(disp, "py_func", None), "__module__", None) != module:
                continue
            index = getattr(getattr(disp, "_cache", None), "_cache_file", None)
            stamp = getattr(index, "_source_stamp", None)
            if stamp is not None and not (isinstance(stamp, tuple) and stamp[-1:] == (SOURCE_DIGEST,)):
                index._source_stamp = (stamp, SOURCE_DIGEST)
