"""`dlrm-scaling analyze`: the command-line face of `report.write_report`.

`main` parses the arguments after the word `analyze`; the package CLI
(dlrm_jax/cli.py) hands them over, and `python -m analysis` works on its own.
Bad input (a missing path, too few points, a bad flag) prints one line to stderr and
returns 2; success prints the summary and returns 0.
"""

from __future__ import annotations

import argparse
import math
import sys

PROG = "dlrm-scaling analyze"


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):          # argparse would print usage and exit(2)
        raise UsageError(message)


def parse(parser: argparse.ArgumentParser, argv, prog: str):
    """(args, None), or (None, exit code): a bad flag is one line and 2, --help is 0.

    `parser` must be a `Parser` (analyze and plan share this).
    """
    try:
        return parser.parse_args(argv), None
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, 2
    except SystemExit as e:           # --help
        return None, int(e.code or 0)



# Each resample is a full refit (a fraction of a second to seconds); 10,000 already
# pin a 95% percentile interval's ends to ~0.2% in probability.  More is a typo, and
# 10**11 was a 3.6 TiB MemoryError traceback.
MAX_BOOTSTRAP = 100_000


def check_fit_flags(args) -> None:
    """--bootstrap, --seed and --level, which analyze and plan share; ValueError naming the flag."""
    if not 0 <= args.bootstrap <= MAX_BOOTSTRAP:
        raise ValueError(f"--bootstrap must be 0 to {MAX_BOOTSTRAP:,}, got {args.bootstrap}")
    if args.seed < 0:                  # numpy's generators take none; it was a failed fit
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not 0 < args.level < 1:         # also refuses nan
        raise ValueError(f"--level must be in (0, 1), got {args.level}")


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Fit scaling laws to sweep results and write a report "
                "(report.md, fits.json, PNG plots).")
    p.add_argument("path", metavar="SWEEP_DIR|results.csv",
                   help="a sweep directory, a directory of sweep directories, or a results.csv")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="where to write the report")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="bootstrap resamples for intervals (default 200; 0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--holdout", type=int, default=1, metavar="K",
                   help="hold out the K largest scales of each scheme to check extrapolation (default 1; 0: off)")
    p.add_argument("--huber-delta", type=float, default=1e-3, metavar="DELTA",
                   help="Huber threshold on log residuals (default 1e-3)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--axis", action="append", default=[], metavar="SCHEME=COLUMN",
                   help="fit SCHEME against COLUMN instead of its default resource (repeatable)")
    p.add_argument("--target", type=float, action="append", default=None, metavar="NE",
                   help="NE to invert: resource needed to reach it (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `analyze` with the arguments after the word `analyze`; returns the exit code."""
    from analysis.render import summary_text
    from analysis.report import write_report  # keeps --help fast
    from analysis.results import AxisError
    from dlrm_jax.run import storage
    from dlrm_jax.run.files import check_writable_dir

    args, code = parse(_parser(), argv, PROG)
    if args is None:
        return code
    try:
        check_fit_flags(args)
        if args.holdout < 0:
            raise ValueError(f"--holdout must be >= 0, got {args.holdout}")
        if not (math.isfinite(args.huber_delta) and args.huber_delta > 0):
            raise ValueError(f"--huber-delta must be a positive finite number, "
                             f"got {args.huber_delta}")
        for t in args.target or ():
            if not (math.isfinite(t) and t > 0):   # NE is positive; nan compares false everywhere
                raise ValueError(f"--target must be a positive finite NE, got {t}")
        axes = {}
        for a in args.axis:
            scheme, sep, column = a.partition("=")
            if not sep or not scheme or not column:
                raise ValueError(f"--axis takes SCHEME=COLUMN, got {a!r}")
            axes[scheme] = column
        if storage.is_remote(args.out):          # a bad bucket is one line before the fits
            storage.makedirs(args.out)
        else:
            check_writable_dir(args.out, "--out")   # before the fits, not after them
        fits = write_report(args.path, args.out, bootstrap=args.bootstrap, seed=args.seed,
                            holdout=args.holdout, huber_delta=args.huber_delta, level=args.level,
                            axes=axes or None, targets=args.target)
    except (ValueError, OSError) as e:
        text = f"--axis {e.scheme}={e.column}: {e.reason}" if isinstance(e, AxisError) else str(e)
        msg = " ".join(text.split())        # one line, whatever the exception text
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    print(summary_text(fits))
    print(f"report: {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
