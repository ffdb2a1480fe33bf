"""`dlrm-scaling` (and `python -m dlrm_jax`): one entry point, thin subcommands.

Every subcommand's logic lives in an importable module; this file only parses
arguments, and turns bad input (UserError, ValueError from the analysis) into
one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from dlrm_jax.config import PRESETS
from dlrm_jax.errors import UserError, write_error
from dlrm_jax.run.preemption import PREEMPTED_EXIT, Preempted
from sweeps import NAMES as sweep_names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlrm-scaling", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one DLRM into a run directory")
    _add_config_args(t)
    t.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--restart-if-unreadable", action="store_true",
                   help="if no checkpoint can be read, set them aside and start from step 0 "
                        "(checkpoint.restart_if_unreadable=true); without it that is exit 2")

    b = sub.add_parser("bench", help="examples/s of the jitted train step")
    _add_config_args(b)
    b.add_argument("--batch", type=int, help="global batch size (default: the preset's)")
    b.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    b.add_argument("--repeats", type=int, default=5, help="timings; the median is reported")
    b.add_argument("--dense-embedding", action="store_true",
                   help="also time the dense-gradient baseline (optax on the full table)")
    b.add_argument("--json", action="store_true", help="print one JSON object")

    s = sub.add_parser("sweep", help="run a sweep: one run directory per point, plus results.csv")
    s.add_argument("sweep", help=f"sweep name ({', '.join(sweep_names)}) or a .py file")
    _add_config_args(s)
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--workers", type=int, default=1, help="runs at once (local processes)")
    s.add_argument("--shard", help="I/N: run every N-th point starting at I")
    s.add_argument("--dry-run", action="store_true", help="print the train commands, run nothing")

    dm = sub.add_parser("demo", help="the whole study in small, on synthetic data, on a CPU")
    dm.add_argument("--out", required=True, help="demo directory (resumed if it exists)")
    dm.add_argument("--workers", type=int, default=1, help="runs at once (local processes)")

    pt = sub.add_parser("planted", help="a study in a planted world, whose answer is known: predicted beside "
                                        "recovered (planted.json, planted.md)")
    pt.add_argument("studies", nargs="*", metavar="NAME",
                    help="planted study (planted-zipf, planted-triple); all when none is named")
    pt.add_argument("--out", required=True, help="study directory (resumed if it exists)")
    pt.add_argument("--workers", type=int, default=1, help="runs at once (local processes)")

    a = sub.add_parser("analyze", help="fit scaling laws to a sweep", add_help=False)
    a.add_argument("rest", nargs=argparse.REMAINDER)

    pl = sub.add_parser("plan", help="model and data for a FLOP budget or target NE, from a study's laws",
                        add_help=False)
    pl.add_argument("rest", nargs=argparse.REMAINDER)

    c = sub.add_parser("compile", help="compile the train step ahead of time (CPU devices or a TPU slice): "
                                       "memory, collectives, FLOPs per device", add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)

    d = sub.add_parser("data", help="data preparation")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    cp = dsub.add_parser("criteo-prepare", help="Criteo TSV into columnar shards", add_help=False)
    cp.add_argument("rest", nargs=argparse.REMAINDER)
    ca = dsub.add_parser("calibrate", help="fit a synthetic world to prepared Criteo shards", add_help=False)
    ca.add_argument("rest", nargs=argparse.REMAINDER)
    mh = dsub.add_parser("criteo-multihot", help="prepared shards into MLPerf DLRMv2 multi-hot bags",
                         add_help=False)
    mh.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"named preset: {', '.join(PRESETS)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set train.examples=65536")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Subcommands owned by other modules parse their own arguments.
    if argv[:1] == ["analyze"]:
        from analysis.cli import main as analyze_main
        return analyze_main(argv[1:])
    if argv[:1] == ["plan"]:
        from analysis.plan_cli import main as plan_main
        return plan_main(argv[1:])
    if argv[:1] == ["compile"]:  # sets the host device count before JAX starts
        from dlrm_jax.compile.report import main as compile_main
        return compile_main(argv[1:])
    if argv[:2] == ["data", "criteo-prepare"]:
        from dlrm_jax.data.criteo.prepare import main as prepare_main
        return prepare_main(argv[2:])
    if argv[:2] == ["data", "calibrate"]:
        from dlrm_jax.data.calibrate import main as calibrate_main
        return calibrate_main(argv[2:])
    if argv[:2] == ["data", "criteo-multihot"]:
        from dlrm_jax.data.criteo.multihot import main as multihot_main
        return multihot_main(argv[2:])
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as err:
        print(f"dlrm-scaling {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Preempted as err:
        print(f"dlrm-scaling {args.command}: {err}", file=sys.stderr)
        return PREEMPTED_EXIT
    except Exception as err:
        # A full disk, a quota, a file-size limit or a read-only mount, however deep in
        # Orbax or TensorStore it surfaced: one line, and the rerun resumes.
        cause = write_error(err)
        if cause is None:
            raise
        print(f"dlrm-scaling {args.command}: error: {cause}; free space and rerun to resume",
              file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "sweep":
        from sweeps.runner import run_sweep
        rows = run_sweep(args.sweep, args.out, args.preset, args.overrides, workers=args.workers,
                         shard=args.shard, dry_run=args.dry_run)
        return 2 if any(r["status"] != "done" for r in rows) else 0
    if args.command == "planted":
        from dlrm_jax.planted import run_planted
        results = run_planted(args.studies, args.out, workers=args.workers)
        for study in results["studies"].values():
            for a in study["answers"]:
                print(f"{'pass' if a['pass'] else 'FAIL'}  {a['study']}: {a['name']}: predicted {a['predicted']:.3f}, "
                      f"recovered {a['fitted']:.3f} [{a['interval'][0]:.3f}, {a['interval'][1]:.3f}] "
                      f"(tolerance {a['tolerance']:.3f})")
        print(f"-> {args.out}/planted.json, planted.md")
        return 0 if results["pass"] else 1  # a planted answer not recovered: the study failed
    if args.command == "demo":
        from dlrm_jax.demo import demo
        return demo(args.out, workers=args.workers)
    from dlrm_jax.compile.cache import enable_compilation_cache
    from dlrm_jax.config import load_config
    from dlrm_jax.parallel.host_memory import keep_freed_memory
    overrides = list(args.overrides)
    if getattr(args, "restart_if_unreadable", False):
        overrides.append("checkpoint.restart_if_unreadable=true")
    cfg = load_config(args.preset, overrides)
    enable_compilation_cache()
    keep_freed_memory()  # before the first step: XLA's per-step buffers then reuse pages
    if args.command == "train":
        from dlrm_jax.train import train
        s = train(cfg, args.out, progress=False if args.no_progress else None)
        if s["status"] != "done":  # a diverged run (NaN loss) is bad input too: exit 2
            print(f"dlrm-scaling train: error: {args.out}: {s['error']}", file=sys.stderr)
            return 2
        bayes = f"  (Bayes NE {s['bayes_ne']:.4f})" if s.get("bayes_ne") is not None else ""
        rate = f"{s['examples_per_s']:,.0f} examples/s" if s.get("examples_per_s") else "n/a"
        target = (f" (target {s['auc_target']:g}: {'reached' if s['auc_target_reached'] else 'not reached'})"
                  if s.get("auc_target") else "")
        print(f"eval NE {s['eval_ne']:.4f}{bayes}  AUC {s['eval_auc']:.4f}{target}  "
              f"throughput {rate}  ({s['train_examples']:,} examples, {s['wall_s']:.1f} s) -> {args.out}")
        return 0
    if args.command == "bench":
        from dlrm_jax.bench import bench, format_result
        result = bench(cfg, batch_size=args.batch, steps=args.steps, repeats=args.repeats,
                       dense_embedding=args.dense_embedding)
        print(json.dumps(result) if args.json else format_result(result))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """The process entry point (console script and `python -m dlrm_jax`): `main`, then exit.

    A checkpoint restore that failed (exit 2: no readable checkpoint) can leave
    TensorStore reads in flight; at interpreter teardown they print "Event loop
    is closed" tracebacks that would bury the one-line error.  Nothing remains
    to be written on that path (errors are raised before any file is touched),
    so such a process leaves without the teardown.  `main` itself never exits,
    so tests and notebooks can call it.
    """
    try:
        code = main()
    except KeyboardInterrupt:  # a Ctrl-C outside the train loop (which saves and exits 75)
        print("dlrm-scaling: interrupted", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    if code == 2 and "orbax.checkpoint" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
