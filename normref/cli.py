"""Command line: ``python -m normref {list, check, conform, export, info}``.

``conform --target T`` exits 0 exactly when no check failed unexpectedly
(expected failures, listed in normref/testing/known/<target>.json, and
unexpected passes are reported, not fatal); 1 on unexpected failures or
errors; 2 when a target cannot be loaded.  ``conform --second-order --target
T`` (T: torch, jax) judges the framework's Hessians and Hessian-vector
products through normalization layers instead, with the same exit rule.
``conform`` and ``check`` take ``--dask [ADDRESS]`` (run the cases on a Dask
cluster, :mod:`normref.distributed`: the same report, byte for byte) and
``--seeds N`` (a larger sweep).

Every user error -- an unknown normalizer, a negative seed, an output path
that cannot be written, a malformed option -- exits with status 2 and one
line on stderr naming the argument, the value received and what was
expected, before any long work starts; so does an OSError while writing
(disk full, permission denied).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile


class UsageError(Exception):
    """A user error: :func:`main` prints its one-line message and returns 2."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as :class:`UsageError` (one line, no usage block)."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)", prog=self.prog)


# -- validation helpers: one per kind of argument, shared by the subcommands --

def _seed(text):
    """argparse type of ``--seed``: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected a non-negative integer")
    return value


def _seeds(text):
    """argparse type of ``--seeds``: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive integer "
                                         f"(the number of seeds s0 .. s<N-1> per case)")
    return value


#: the value of ``--dask`` given without an address: start a LocalCluster
_LOCAL_CLUSTER = "local cluster"


def _dask_option(args):
    """Validate ``--dask`` (before any long work): Dask's distributed scheduler
    importable, the address well-formed.  Returns the address, None for a
    LocalCluster, False without ``--dask``."""
    if args.dask is None:
        return False
    from . import distributed as dist

    try:
        dist.require_distributed()
        return None if args.dask == _LOCAL_CLUSTER else dist.check_address(args.dask)
    except (ImportError, ValueError) as e:
        from .registry import REGISTRY

        where = "" if args.dask == _LOCAL_CLUSTER else f" {args.dask}"
        hint = (f"; {args.dask!r} is a normalizer: put the names before a bare --dask"
                if args.dask in REGISTRY else "")
        raise UsageError(f"--dask{where}: {e}{hint}") from None


def _sweep_cluster(address, targets=()):
    """Context manager: the Dask client of ``--dask`` (None for a serial run; a
    LocalCluster when ``address`` is None, closed on every exit path).  A
    scheduler that cannot be reached, or workers that cannot reproduce the
    serial run (another normref, framework, ... version; a target they cannot
    build), are a UsageError."""
    import contextlib

    if address is False:
        return contextlib.nullcontext(None)
    from . import distributed as dist

    arg = "--dask" if address is None else f"--dask {address}"

    @contextlib.contextmanager
    def connected():
        with contextlib.ExitStack() as stack:
            try:
                client = stack.enter_context(dist.cluster(address, targets))
            except (OSError, ValueError) as e:
                raise UsageError(f"{arg}: {e}") from None
            yield client

    return connected()


def _names(names, known, arg):
    """``names`` without repeats (order kept), None for "all"; UsageError naming unknown ones."""
    if not names:
        return None
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"{arg}: no normalizer named {', '.join(map(repr, unknown))}; "
                         f"expected one of: {', '.join(sorted(known))}")
    return list(dict.fromkeys(names))


def _catalogued():
    """The normalizers the conformance catalogue has cases for (what conform / export take)."""
    from .testing import conformance

    return conformance.catalogued()


def _probe_dir(directory, arg, path):
    """UsageError unless a file can be created in ``directory`` (the probe leaves nothing)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise UsageError(f"{arg} {path!r}: cannot write in directory {directory!r} "
                         f"({e.strerror or e})") from None


def _writable_file(path, arg):
    """UsageError unless ``path`` can be written as a file, checked without creating it.

    It must not be a directory, and its directory must exist and be writable
    (an existing file must be writable itself).
    """
    if path is None:
        return
    if not path:
        raise UsageError(f"{arg}: an empty path; expected a file name")
    if os.path.isdir(path):
        raise UsageError(f"{arg} {path!r} is a directory; expected a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise UsageError(f"{arg} {path!r}: its directory {parent!r} {what}")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{arg} {path!r}: the existing file is not writable")
    else:
        _probe_dir(parent, arg, path)


def _output_dir(path, arg):
    """UsageError unless ``path`` is (or can be created as) a writable directory."""
    if not path:
        raise UsageError(f"{arg}: an empty path; expected a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{arg} {path!r} is an existing file; expected a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{arg} {path!r}: {existing!r} is a file, not a directory")
    _probe_dir(existing, arg, path)


# -- subcommands ---------------------------------------------------------------

def _cmd_list(args):
    from .registry import REGISTRY

    def traits(s):  # the taxonomy's data, as the suites query it
        return " ".join(t for t, on in (("centres", s.centres), ("batch", s.batch_axis),
                                        ("whitens", s.whitening), ("running", s.running_state))
                        if on) or "-"

    rows = [(n, s.family, s.nap.kind.value, s.nop.kind.value, "+".join(k.value for k in s.nrr.kinds),
             traits(s), s.nap, s.nop, s.nrr) for n, s in sorted(REGISTRY.items())]
    heads = ("name", "family", "NAP", "NOP", "NRR", "traits", "statistics over", "operation",
             "recovery")
    widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


def _cmd_check(args):
    """Check the named normalizers (all by default) and, without names or with
    ``--theory``, the theory claims.

    Validates first: the names against the registry, ``--json`` writable
    (and only given when the theory claims run: they are what it writes).
    ``--seed`` is checked by argparse (a non-negative integer).
    """
    import json

    from .check import run, run_theory
    from .registry import REGISTRY

    if args.json and args.names and not args.theory:
        raise UsageError(f"--json {args.json!r} writes the theory claims: add --theory when "
                         "naming normalizers")
    _writable_file(args.json, "--json")
    names = _names(args.names, REGISTRY, "names")
    address = _dask_option(args)
    with _sweep_cluster(address) as client:
        if client is None:
            failures = run(names, seed=args.seed, seeds=args.seeds or 1)
        else:
            from .distributed import units_on_cluster

            failures = run(names, seed=args.seed, seeds=args.seeds or 1,
                           map_units=lambda fn, units: units_on_cluster(client, fn, units))
    failing = []
    if not names or args.theory:
        claims, failing = run_theory()
        if args.json:
            with open(args.json, "w") as f:
                json.dump([c.as_dict() for c in claims], f, indent=2, default=float)
    return 1 if failures or failing else 0


def _cmd_info(args):
    import numba
    import numpy
    import scipy

    from . import __version__
    from .registry import REGISTRY

    print(f"normref {__version__}: {len(REGISTRY)} normalizers")
    print(f"numpy {numpy.__version__}, scipy {scipy.__version__}, numba {numba.__version__}, "
          f"threads {numba.get_num_threads()}")
    return 0


def _cmd_conform(args):
    """Run the conformance kit against each --target; exit 1 on unexpected failures.

    Validates first: ``--json`` writable, ``--names`` against the catalogue,
    every target loadable and running ``--dtype``.
    """
    import json

    if args.list_targets:
        from .testing.adapters import describe_targets

        rows = describe_targets()
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        for name, source, status in rows:
            print(f"{name.ljust(w0)}  {source.ljust(w1)}  {status}")
        return 0
    if not args.target:
        raise UsageError("the following arguments are required: --target (or --list-targets)")
    if args.second_order:
        return _second_order(args)
    from .testing.adapters import get_adapter, target_names
    from .testing.conformance import catalogue, format_table, results_json, run_conformance
    from .testing.conformance.report import accuracy_rows, format_accuracy

    _writable_file(args.json, "--json")
    address = _dask_option(args)
    cases = catalogue(_names(args.names, _catalogued(), "--names"), seeds=args.seeds)
    targets = list(dict.fromkeys(args.target))
    valid = target_names()
    unknown = [t for t in targets if t not in valid]
    if unknown:
        raise UsageError(f"--target: invalid choice {', '.join(map(repr, unknown))} (choose from "
                         f"{', '.join(valid)})")
    adapters = []
    for target in targets:
        try:
            adapter = get_adapter(target)
        except (ImportError, ValueError) as e:
            raise UsageError(f"--target {target}: {e}") from None
        if args.dtype and args.dtype not in adapter.dtypes:
            raise UsageError(f"--dtype {args.dtype}: the {target} adapter runs "
                             f"{', '.join(adapter.dtypes)}")
        adapters.append(adapter)
    dtypes = [args.dtype] if args.dtype else None
    results = []
    with _sweep_cluster(address, targets) as client:
        for target, adapter in zip(targets, adapters):
            print(f"conform: {target}: {len(cases)} cases, dtypes "
                  f"{', '.join(d for d in adapter.dtypes if dtypes is None or d in dtypes)}",
                  file=sys.stderr)
            progress = "always" if (sys.stderr.isatty() or len(cases) > 50) and not args.quiet \
                else False
            if client is None:
                results += run_conformance(adapter, cases, dtypes=dtypes, progress=progress)
            else:
                from .distributed import conform_on_cluster

                results += conform_on_cluster(client, adapter, target, [c.id for c in cases],
                                              dtypes=dtypes, progress=progress)
    print(format_table(results))
    print()
    print(format_accuracy(results))
    unexpected = [r for r in results if r.status in ("fail", "error")]
    xpass = [r for r in results if r.status == "xpass"]
    for title, rows in (("unexpected failures", unexpected), ("unexpected passes", xpass)):
        if rows:
            print(f"\n{title} ({len(rows)}):")
            for r in rows:
                detail = str(r.verdict) if r.verdict is not None else r.check
                print(f"  {r.status.upper():5} {r.framework} {r.case_id} [{r.dtype}] {detail}"
                      + (f" -- {r.reason}" if r.reason and r.verdict is None else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            accuracy = [dict(zip(("framework", "normalizer", "dtype", "checks", "median_ulps",
                                  "worst_ulps"), row[:4] + tuple(
                                      v if v == v and abs(v) != float("inf") else repr(v)
                                      for v in row[4:])))
                        for row in accuracy_rows(results)]
            json.dump({"targets": targets, "results": results_json(results),
                       "accuracy": accuracy}, fh, indent=1)
    return 1 if unexpected else 0


def _second_order(args):
    """``conform --second-order``: judge torch's / JAX's Hessians and HVPs through
    normalization layers (:mod:`normref.testing.second_order`); exit 1 on unexpected failures."""
    import importlib
    import json

    from .testing import second_order as so

    for given, opt in ((args.dask is not None, "--dask"), (args.seeds is not None, "--seeds")):
        if given:
            raise UsageError(f"{opt}: --second-order runs its fixed networks serially; "
                             f"{opt} sweeps the catalogue of conform without --second-order")
    _writable_file(args.json, "--json")
    names = _names(args.names, so.NORMALIZERS, "--names") if args.names else so.NORMALIZERS
    if args.dtype not in (None, "float64"):
        raise UsageError(f"--dtype {args.dtype}: --second-order judges float64 only")
    targets = list(dict.fromkeys(args.target))
    for target in targets:
        if target not in so.FRAMEWORKS:
            raise UsageError(f"--target {target}: --second-order judges {', '.join(so.FRAMEWORKS)}")
        try:
            importlib.import_module(target)
        except ImportError as e:
            raise UsageError(f"--target {target}: {e}; pip install {target}") from None
    rows = so.second_order_rows(frameworks=targets, normalizers=names)
    print(so.format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"targets": targets, "second_order": [r.as_dict() for r in rows]}, fh, indent=1)
    return 1 if any(r.status in ("fail", "error") for r in rows) else 0


def _cmd_export(args):
    """Write the golden corpus (:func:`normref.export.export_corpus`).

    Validates first: ``--names`` against the catalogue, ``--out`` a writable
    directory (or creatable), and a previous ``index.json`` in it readable
    (the files it lists are replaced); ``--dtype`` (at least one, from
    :data:`normref.export.DTYPES`) is checked by argparse.
    """
    from .export import export_corpus, previous_export

    names = _names(args.names, _catalogued(), "--names")
    _output_dir(args.out, "--out")
    try:
        previous_export(args.out)
    except ValueError as e:
        raise UsageError(f"--out {args.out!r}: {e}") from None
    paths = export_corpus(args.out, names=names, dtypes=tuple(dict.fromkeys(args.dtype)),
                          progress=not args.quiet)
    n = sum(p.endswith(".npz") for p in paths)
    print(f"wrote {n} cases ({len(paths)} files) to {args.out}")
    return 0


def _sweep_options(p, what, seeds_help):
    """``--dask [ADDRESS]`` and ``--seeds N`` (check and conform)."""
    p.add_argument("--dask", nargs="?", const=_LOCAL_CLUSTER, default=None, metavar="ADDRESS",
                   help=f"run the {what} on a Dask cluster: the scheduler at ADDRESS "
                        "(tcp://HOST:8786), or without ADDRESS a local cluster of one worker "
                        "process per core; same report as the serial run (needs "
                        'pip install "normref[dask]")')
    p.add_argument("--seeds", type=_seeds, default=None, metavar="N", help=seeds_help)


def _parser():
    from .export import DTYPES as EXPORT_DTYPES

    parser = _Parser(prog="python -m normref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the registered normalizers and their taxonomy")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("check", help="verify forward, VJP, JVP and Jacobians of every normalizer")
    p.add_argument("names", nargs="*", help="normalizers to check (default: all)")
    p.add_argument("--seed", type=_seed, default=0, help="a non-negative integer (default: 0)")
    p.add_argument("--theory", action="store_true",
                   help="also run the theory claims when normalizers are named (always run otherwise)")
    p.add_argument("--json", metavar="FILE",
                   help="write the theory claims as JSON objects (id, claim, source, predicted, "
                        "measured, tolerance, passed); with names, needs --theory")
    _sweep_options(p, "checks", "check N draws of every normalizer's example cases (a positive "
                   "integer; default 1: draw 0, the examples of the plain check; draw k > 0 "
                   "draws new inputs and directions)")
    p.set_defaults(fn=_cmd_check)
    p = sub.add_parser("conform", help="judge a framework's normalizers against normref")
    p.add_argument("--target", action="append", default=None, metavar="TARGET",
                   help="framework to judge (repeat for several); the names come from the "
                        "adapter registry, built-in and plug-ins: see --list-targets")
    p.add_argument("--list-targets", action="store_true",
                   help="list the conformance targets (built-in and plug-in adapters), whether "
                        "each is installed, and exit")
    p.add_argument("--json", metavar="FILE", help="write every result as JSON")
    p.add_argument("--names", nargs="+", metavar="NAME", help="normalizers (default: all)")
    p.add_argument("--dtype", choices=("float16", "float32", "float64"),
                   help="judge only this dtype (default: every dtype the adapter runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _sweep_options(p, "cases", "give every catalogue variant, random and adversarial, the "
                   "seeds s0 .. s<N-1> (a positive integer; default: the catalogue's own, "
                   "3 per random variant and 1 per adversarial one)")
    p.add_argument("--second-order", action="store_true",
                   help="judge Hessians and Hessian-vector products of small networks through "
                        "batch / layer / group / RMS norm instead (targets torch, jax; float64)")
    p.set_defaults(fn=_cmd_conform)
    p = sub.add_parser("info", help="versions and threads")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("export", help="write the golden corpus: per case an .npz of inputs, "
                       "outputs, cotangents and VJPs plus JSON metadata")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (the files a previous export there lists are replaced)")
    p.add_argument("--names", nargs="+", metavar="NAME", default=None,
                   help="normalizers (default: all)")
    p.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=EXPORT_DTYPES,
                   help="target dtypes (default: float64 float32)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(fn=_cmd_export)
    return parser


def _error(prog, message):
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv=None):
    """Run one subcommand; return its exit status (2 on a user error, see the module doc).

    Only user and environment errors are caught: :class:`UsageError` (argparse
    and the validation helpers) and OSError (reading or writing files);
    anything else is a bug and propagates.
    """
    parser = _parser()
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
        prog = f"{parser.prog} {args.command}"
        import normref  # noqa: F401  (registers every normalizer)

        return args.fn(args)
    except UsageError as e:
        return _error(e.prog or prog, e)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _error(prog, f"{where}{e.strerror or e}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
