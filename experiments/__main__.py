"""``python -m experiments [--quick] [--out DIR] [--only NAME ...] [--resume]``: the validation report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import report as _report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced settings (under 2 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default report/ or report-quick/)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="rerun only these sections; the others already in --out are kept in report.md")
    parser.add_argument("--resume", action="store_true",
                        help="keep sections already written successfully in --out (in whatever mode; the report says which)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    args = parser.parse_args(argv)
    modules = _report.discover()
    if args.list:
        for mod in modules:
            print(f"{_report.section_name(mod):24s} {mod.TITLE}")
        return 0
    if args.only:
        try:
            _report.check_names(args.only, modules)
        except _report.UnknownSectionError as err:
            parser.error(str(err))  # usage and "error: unknown section 'x'; available: ...", exit status 2
    out = args.out or Path("report-quick" if args.quick else "report")
    try:
        path = _report.build_report(out, quick=args.quick, only=args.only, resume=args.resume, seed=args.seed,
                                    modules=modules)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report written to {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
