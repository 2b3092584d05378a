r"""The Keras worker: one process per Keras backend, driven by :mod:`.keras`.

Keras fixes its backend when it is first imported (``KERAS_BACKEND``), so
one process cannot run two backends; :class:`~normref.testing.adapters.keras.KerasAdapter`
starts this module as ``python -m normref.testing.adapters._keras_worker``
with ``KERAS_BACKEND`` set and talks to it over its standard input and
output.  The worker knows nothing of normref: it builds a Keras layer from a
plain description, runs it on NumPy arrays and sends back NumPy arrays.

Protocol: frames of an 8-byte big-endian length followed by a pickle, both
ways.  After importing Keras the worker sends one ``{"op": "ready", ...}``
frame (versions, ``keras.backend.result_type("float64", "float32")``,
``keras.config.epsilon()``); then, for each request frame, one response:

* ``{"op": "info"}`` -- the ready frame again;
* ``{"op": "run", "layer": <class name in keras.layers>, "config": {...},
  "weights": {variable name: array}, "x": array, "call": {keyword: value},
  "cotangent": array or None, "wrt": [names], "state": [names]}`` --
  ``{"ok": True, "y": array, "grads": {name: array}, "state": {name: array}}``:
  the layer is built for ``x.shape``, its variables (looked up by their
  ``.name``: ``gamma``, ``beta``, ``moving_mean`` ...) set from ``weights``,
  and called through :meth:`keras.layers.Layer.stateless_call` (so the
  running statistics it updates come back as values, never written to the
  layer); ``grads`` are the VJPs of ``cotangent`` with respect to ``wrt``
  (``"x"`` is the input, any other name a variable), ``state`` the updated
  non-trainable variables named in ``state``;
* ``{"op": "stop"}`` -- the worker exits.

A Python exception while serving a request is answered with ``{"ok": False,
"error": "<type>: <message>", "traceback": ...}`` and the worker goes on; a
crash of the interpreter simply closes the pipe (the adapter restarts it).

Gradients per backend: ``tf.GradientTape`` (tensorflow), ``jax.vjp`` of the
stateless call (jax; with ``jit=True`` in the request, of its ``jax.jit``),
``torch.autograd.grad`` (torch); the numpy backend has no autodiff and
answers ``grads = {}``.  An input or variable the output does not depend on
gets a zero gradient (TensorFlow's ``UnconnectedGradients.ZERO``, the same
for the others).  64-bit JAX is enabled before Keras is imported, and with
``NORMREF_KERAS_JAX_CACHE_DIR`` set XLA's persistent compilation cache is kept
there (every program, however quick to compile: a catalogue run compiles one
per case and dtype, and the cached executables are the same ones).

File descriptor 1 is redirected to 2 at start, so anything Keras or a backend
prints never corrupts the protocol stream.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback

_HEADER = struct.Struct(">Q")


def read_frame(stream):
    """One frame from a binary stream; None at end of file (a clean close)."""
    head = stream.read(_HEADER.size)
    if not head:
        return None
    if len(head) < _HEADER.size:
        raise EOFError("truncated frame header")
    (n,) = _HEADER.unpack(head)
    body = stream.read(n)
    if len(body) < n:
        raise EOFError("truncated frame")
    return pickle.loads(body)


def write_frame(stream, obj):
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


class _Backend:
    """What differs between backends: tensors, the VJP, back to NumPy."""

    def __init__(self, name):
        self.name = name
        if name == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)
            cache = os.environ.get("NORMREF_KERAS_JAX_CACHE_DIR")
            if cache:  # XLA's persistent cache: the same executables, compiled once
                jax.config.update("jax_compilation_cache_dir", cache)
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        import keras  # noqa: F401  (after the JAX flag)

        self.keras = keras

    def versions(self):
        import importlib.metadata as md

        keras = self.keras
        pkg = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",),
               "torch": ("torch",), "numpy": ("numpy",)}[self.name]
        framework = None
        for p in pkg:
            try:
                framework = f"{p} {md.version(p)}"
                break
            except md.PackageNotFoundError:
                continue
        return {"op": "ready", "backend": keras.backend.backend(),
                "keras": keras.__version__, "framework": framework,
                "result_type_float64_float32": keras.backend.result_type("float64", "float32"),
                "epsilon": float(keras.config.epsilon()), "pid": os.getpid()}

    # -- tensors ---------------------------------------------------------------
    def tensor(self, a):
        import numpy as np

        a = np.asarray(a)
        if self.name == "tensorflow":
            import tensorflow as tf

            return tf.constant(a)
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(a)
        if self.name == "torch":
            import torch

            return torch.tensor(np.ascontiguousarray(a))
        return a.copy()

    def numpy(self, t):
        import numpy as np

        if self.name == "torch":
            return t.detach().cpu().numpy()
        return np.asarray(t)

    # -- one call ----------------------------------------------------------------
    def call(self, layer, x, tv, ntv, call_kwargs, cotangent, wrt_x, wrt_t, wrt_n, jit):
        """(y, new non-trainable values, {("x"|"t"|"n", index): gradient})."""

        def f(x_, tv_, ntv_):
            return layer.stateless_call(list(tv_), list(ntv_), x_, **call_kwargs)

        wanted = cotangent is not None and (wrt_x or wrt_t or wrt_n)
        if self.name == "numpy" or not wanted:
            if self.name == "torch":
                import torch

                with torch.no_grad():
                    y, new = f(x, tv, ntv)
            else:
                y, new = f(x, tv, ntv)
            return y, new, {}
        if self.name == "tensorflow":
            return self._tf(f, x, tv, ntv, cotangent, wrt_x, wrt_t, wrt_n)
        if self.name == "jax":
            return self._jax(f, x, tv, ntv, cotangent, wrt_x, wrt_t, wrt_n, jit)
        return self._torch(f, x, tv, ntv, cotangent, wrt_x, wrt_t, wrt_n)

    @staticmethod
    def _pick(x, tv, ntv, wrt_x, wrt_t, wrt_n):
        keys = ([("x", 0)] if wrt_x else []) + [("t", i) for i in wrt_t] + \
               [("n", i) for i in wrt_n]
        src = {"x": [x], "t": tv, "n": ntv}
        return keys, [src[k][i] for k, i in keys]

    def _tf(self, f, x, tv, ntv, ct, wrt_x, wrt_t, wrt_n):
        import tensorflow as tf

        keys, sources = self._pick(x, tv, ntv, wrt_x, wrt_t, wrt_n)
        with tf.GradientTape() as tape:
            for s in sources:
                tape.watch(s)
            y, new = f(x, tv, ntv)
        grads = tape.gradient(y, sources, output_gradients=tf.constant(ct, dtype=y.dtype),
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return y, new, dict(zip(keys, grads))

    def _jax(self, f, x, tv, ntv, ct, wrt_x, wrt_t, wrt_n, jit):
        import jax
        import jax.numpy as jnp

        def both(x_, tv_, ntv_, ct_):
            y, pullback, new = jax.vjp(f, x_, list(tv_), list(ntv_), has_aux=True)
            return y, new, pullback(ct_.astype(y.dtype))

        if jit:  # one XLA program for the forward and the VJP (as a jitted train step)
            both = jax.jit(both)
        y, new, (gx, gt, gn) = both(x, list(tv), list(ntv), jnp.asarray(ct))
        grads = {("x", 0): gx} if wrt_x else {}
        grads.update({("t", i): gt[i] for i in wrt_t})
        grads.update({("n", i): gn[i] for i in wrt_n})
        return y, new, grads

    def _torch(self, f, x, tv, ntv, ct, wrt_x, wrt_t, wrt_n):
        import torch

        keys, sources = self._pick(x, tv, ntv, wrt_x, wrt_t, wrt_n)
        for s in sources:
            s.requires_grad_(True)
        y, new = f(x, tv, ntv)
        if y.requires_grad:
            grads = torch.autograd.grad(y, sources, grad_outputs=torch.tensor(ct, dtype=y.dtype),
                                        allow_unused=True)
        else:
            grads = [None] * len(sources)
        out = {k: (torch.zeros_like(s) if g is None else g)
               for k, g, s in zip(keys, grads, sources)}
        return y, new, out


def run(backend, req):
    import numpy as np

    keras = backend.keras
    cls = getattr(keras.layers, req["layer"])
    layer = cls(**req["config"])
    x_np = np.asarray(req["x"])
    if not layer.built:
        layer.build(x_np.shape)
    by_name = {v.name: v for v in layer.weights}
    unknown = sorted(set(req["weights"]) - set(by_name))
    if unknown:
        raise KeyError(f"{req['layer']} has no variables {unknown}; it has {sorted(by_name)}")
    for name, value in req["weights"].items():
        var = by_name[name]
        value = np.asarray(value)
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{req['layer']}.{name} has shape {tuple(var.shape)}, "
                             f"the request gives {value.shape}")
        var.assign(value.astype(var.dtype))
    tnames = [v.name for v in layer.trainable_variables]
    nnames = [v.name for v in layer.non_trainable_variables]
    tv = [backend.tensor(backend.numpy(v.value)) for v in layer.trainable_variables]
    ntv = [backend.tensor(backend.numpy(v.value)) for v in layer.non_trainable_variables]
    x = backend.tensor(x_np)
    wrt = list(req.get("wrt") or ())
    bad = [n for n in wrt if n != "x" and n not in tnames and n not in nnames]
    if bad:
        raise KeyError(f"cannot differentiate {req['layer']} with respect to {bad}")
    y, new, grads = backend.call(
        layer, x, tv, ntv, dict(req.get("call") or {}), req.get("cotangent"),
        "x" in wrt, [tnames.index(n) for n in wrt if n in tnames],
        [nnames.index(n) for n in wrt if n in nnames], bool(req.get("jit")))
    out_grads = {}
    for (kind, i), g in grads.items():
        name = "x" if kind == "x" else (tnames[i] if kind == "t" else nnames[i])
        out_grads[name] = backend.numpy(g)
    state = {n: backend.numpy(new[nnames.index(n)]) for n in req.get("state") or ()}
    return {"ok": True, "y": backend.numpy(y), "grads": out_grads, "state": state}


def main():
    proto_in = sys.stdin.buffer
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints (Keras, TensorFlow, JAX) must not reach the protocol
    sys.stdout = sys.stderr
    name = os.environ.get("KERAS_BACKEND", "tensorflow")
    backend = _Backend(name)
    ready = backend.versions()
    write_frame(proto_out, ready)
    while True:
        req = read_frame(proto_in)
        if req is None or req.get("op") == "stop":
            break
        try:
            if req.get("op") == "info":
                resp = ready
            elif req.get("op") == "run":
                resp = run(backend, req)
            else:
                resp = {"ok": False, "error": f"unknown op {req.get('op')!r}"}
        except Exception as e:  # noqa: BLE001  (reported to the adapter, the worker goes on)
            resp = {"ok": False, "error": f"{type(e).__name__}: {e}".strip(),
                    "traceback": traceback.format_exc()}
        write_frame(proto_out, resp)


if __name__ == "__main__":
    main()
