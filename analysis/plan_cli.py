"""`dlrm-scaling plan`: the command-line face of `analysis.planner`.

    dlrm-scaling plan STUDY --flops C | --target-ne X [--memory BYTES | --topology NAME [--compile-report F]]

With --topology the answer also gives the estimated hours and chip-hours on that slice
(analysis/wallclock.py): at the chip's peak (a lower bound), or at the rate a
`dlrm-scaling compile --json` report of the same slice estimates.

The package CLI (dlrm_jax/cli.py) hands over the arguments after `plan`. Bad input
(a missing study, an unreachable target, a bad flag) prints one line to stderr and
returns 2; warnings (extrapolation beyond 100x, a capped table) go to stderr too.
"""

from __future__ import annotations

import argparse
import sys

from analysis.cli import Parser, check_fit_flags, parse
from analysis.planner import PlanError, load_study, parse_bytes, plan_for_flops, plan_for_target, topology_memory
from analysis.wallclock import slice_time

PROG = "dlrm-scaling plan"


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Plan a run from a study's joint law NE = E + A/N^alpha + B/D^beta.")
    p.add_argument("study", metavar="STUDY", help="sweep directory, directory of sweeps, or results.csv")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--flops", type=float, help="training-FLOP budget: best predicted NE and its config")
    q.add_argument("--target-ne", type=float, help="NE to reach: least training FLOPs and examples")
    mem = p.add_mutually_exclusive_group()
    mem.add_argument("--memory", help="bytes available for embedding tables (e.g. 16GiB)")
    mem.add_argument("--topology", help="TPU slice whose HBM bounds the tables (v5p:4x4x4, v5p-128, v6e-16)")
    p.add_argument("--compile-report", metavar="FILE",
                   help="`dlrm-scaling compile --topology NAME --json` output: hours at its estimated step rate")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for intervals (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95)
    return p


def main(argv: list[str] | None = None) -> int:
    args, code = parse(_parser(), argv, PROG)
    if args is None:
        return code
    try:
        try:
            check_fit_flags(args)
        except ValueError as e:
            raise PlanError(str(e)) from None
        memory, mem_txt = None, None
        if args.memory is not None:
            memory = parse_bytes(args.memory)
            mem_txt = f"--memory {memory / 2**30:.4g} GiB for tables"
        elif args.topology is not None:
            memory, mem_txt = topology_memory(args.topology)
        if args.compile_report is not None and args.topology is None:
            raise PlanError("--compile-report needs --topology (the slice it was compiled for)")
        study = load_study(args.study, bootstrap=args.bootstrap, seed=args.seed, level=args.level)
        plan = (plan_for_flops(study, args.flops, memory) if args.flops is not None
                else plan_for_target(study, args.target_ne, memory))
        timing = slice_time(plan.flops, args.topology, args.compile_report) if args.topology else []
    except PlanError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if mem_txt:
        plan.notes.insert(0, mem_txt)
    print("\n".join(plan.lines() + timing))
    for w in plan.warnings:
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
