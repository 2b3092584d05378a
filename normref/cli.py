"""Command line: ``python -m normref {list, check, info}``."""
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
    from .check import run

    failures = run(args.names or None, seed=args.seed)
    return 1 if failures else 0


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m normref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the registered normalizers and their taxonomy")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("check", help="verify forward, VJP, JVP and Jacobians of every normalizer")
    p.add_argument("names", nargs="*", help="normalizers to check (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_check)
    p = sub.add_parser("info", help="versions and threads")
    p.set_defaults(fn=_cmd_info)
    args = parser.parse_args(argv)
    import normref  # noqa: F401  (registers every normalizer)

    return args.fn(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
