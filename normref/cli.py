"""Command line: ``python -m normref {list, check, conform, export, info}``.

``conform --target T`` exits 0 exactly when no check failed unexpectedly
(expected failures listed in known_discrepancies.json and unexpected passes
are reported, not fatal); 1 on unexpected failures or errors; 2 when a target
cannot be loaded.
"""
from __future__ import annotations

import argparse
import sys


def _cmd_list(args):
    from .registry import REGISTRY

    rows = [(n, s.family, s.nap, s.nop, s.nrr) for n, s in sorted(REGISTRY.items())]
    heads = ("name", "family", "NAP (statistics over)", "NOP (operation)", "NRR (recovery)")
    widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


def _cmd_check(args):
    import json

    from .check import run, run_theory

    failures = run(args.names or None, seed=args.seed)
    failing = []
    if not args.names or args.theory:
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
    """Run the conformance kit against each --target; exit 1 on unexpected failures."""
    import json

    from .testing.adapters import get_adapter
    from .testing.conformance import catalogue, format_table, results_json, run_conformance

    try:
        cases = catalogue(args.names or None)
    except ValueError as e:
        print(f"conform: {e}", file=sys.stderr)
        return 2
    targets = list(dict.fromkeys(args.target))
    results = []
    for target in targets:
        try:
            adapter = get_adapter(target)
        except (ImportError, ValueError) as e:
            print(f"conform: {e}", file=sys.stderr)
            return 2
        dtypes = [args.dtype] if args.dtype else None
        print(f"conform: {target}: {len(cases)} cases, dtypes "
              f"{', '.join(d for d in adapter.dtypes if dtypes is None or d in dtypes)}",
              file=sys.stderr)
        progress = "always" if (sys.stderr.isatty() or len(cases) > 50) and not args.quiet else False
        results += run_conformance(adapter, cases, dtypes=dtypes, progress=progress)
    print(format_table(results))
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
            json.dump({"targets": targets, "results": results_json(results)}, fh, indent=1)
    return 1 if unexpected else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m normref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the registered normalizers and their taxonomy")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("check", help="verify forward, VJP, JVP and Jacobians of every normalizer")
    p.add_argument("names", nargs="*", help="normalizers to check (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--theory", action="store_true",
                   help="also run the theory claims when normalizers are named (always run otherwise)")
    p.add_argument("--json", metavar="FILE",
                   help="write the theory claims as JSON objects (id, claim, source, predicted, "
                        "measured, tolerance, passed)")
    p.set_defaults(fn=_cmd_check)
    p = sub.add_parser("conform", help="judge a framework's normalizers against normref")
    p.add_argument("--target", action="append", required=True,
                   choices=("torch", "torch-modules", "onnxruntime", "onnx-reference", "jax"),
                   help="framework to judge (repeat for several)")
    p.add_argument("--json", metavar="FILE", help="write every result as JSON")
    p.add_argument("--names", nargs="+", metavar="NAME", help="normalizers (default: all)")
    p.add_argument("--dtype", choices=("float16", "float32", "float64"),
                   help="judge only this dtype (default: every dtype the adapter runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_conform)
    p = sub.add_parser("info", help="versions and threads")
    p.set_defaults(fn=_cmd_info)
    from .export import DTYPES as _EXPORT_DTYPES, cli_command as _cmd_export

    p = sub.add_parser("export", help="write the golden corpus: per case an .npz of inputs, "
                       "outputs, cotangents and VJPs plus JSON metadata")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--names", nargs="*", default=None, help="normalizers (default: all)")
    p.add_argument("--dtype", nargs="*", default=["float64", "float32"],
                   choices=_EXPORT_DTYPES, help="target dtypes (default: float64 float32)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(fn=_cmd_export)
    args = parser.parse_args(argv)
    import normref  # noqa: F401  (registers every normalizer)

    return args.fn(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
