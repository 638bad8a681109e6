"""The ``diffsde`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ._table import format_table


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


def _cmd_limit(args: argparse.Namespace) -> int:
    from .experiments import alpha_bar_limit

    rows, orders = alpha_bar_limit(args.schedule, args.n)
    print("ᾱ_i vs e^{-t_i} with t_i = Σ_{j<i} β_j (seed 000's time); exact times τ_i = -log ᾱ_i give 0")
    print(format_table(rows, ["schedule", "n", "T", "max_error", "n_times_error", "max_error_exact_times"]))
    for name, order in orders.items():
        print(f"fitted order ({name}): {order:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffsde", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    limit = sub.add_parser("limit", help="table of ᾱ_i against e^{-t_i}: the continuous-time limit")
    limit.add_argument("--schedule", nargs="+", default=["linear"], choices=["linear", "cosine"])
    limit.add_argument("--n", nargs="+", type=int, default=[100, 1000, 10000])
    limit.set_defaults(func=_cmd_limit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["limit"])
    try:
        return args.func(args)
    except (CliError, ValueError, TypeError, OSError) as err:
        print(f"diffsde {args.command}: error: {err}", file=sys.stderr)
        return 2
