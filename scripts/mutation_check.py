#!/usr/bin/env python3
"""Do the fast tests catch the bugs they are there for?  Put one small, realistic bug
into the code at a time, run the test that owns the claim it breaks, restore the file.

    python scripts/mutation_check.py              # every mutation (~7 min on the 2-core VM)
    python scripts/mutation_check.py -k locate    # mutations whose name contains 'locate'
    python scripts/mutation_check.py --list       # what each one attacks, and its tests

Each mutation is data (MUTATIONS below): a file, an exact snippet of it (which must
occur exactly once), its replacement, the claim it attacks, and the fast test(s) that
must catch it.  Every named test is run on its own (`pytest -x -q -p no:cacheprovider
NODE`) with the mutation in place: "caught" when it fails, "MISSED" when it passes.
The file is restored after each mutation, byte for byte and with its modification
time, also on Ctrl-C or SIGTERM.  First, all named tests run once on the unmutated
code (skip with --no-baseline): a test that already fails would catch everything.

Exit status: 0 when every mutation is caught by every test named for it; 1 when one
is missed (or a test errors or times out); 2 when a snippet is not found exactly once
(the code moved or changed: update that entry) or the baseline fails.

Not part of CI.  When the code a claim lives in changes (the sharded exchange, new
interactions), add or update the entries here with it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mutations import MUTATIONS, Mutation  # scripts/: this file's directory is on sys.path when it runs

ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """SIGTERM / SIGHUP: unwind through the finally that restores the file."""


def _stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # No .pyc of a mutated file is ever written, so none can outlive the mutation.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _pytest(nodes: list[str], timeout: float) -> tuple[int | None, float, str]:
    """(pytest exit code or None on timeout, seconds, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *nodes]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
        return r.returncode, time.perf_counter() - t, (r.stdout + r.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t, ""


def check_snippets(mutations: list[Mutation]) -> list[str]:
    """One line per mutation whose snippet is not in its file exactly once."""
    problems = []
    for m in mutations:
        path = ROOT / m.path
        if not path.is_file():
            problems.append(f"{m.name}: {m.path} does not exist (moved or renamed?)")
            continue
        text = path.read_text()
        n = text.count(m.original)
        if n == 1:
            continue
        snippet = m.original.strip().splitlines()[0]
        if n == 0:
            hint = (" (the mutated text is there: an earlier run was killed; `git checkout` the file)"
                    if m.replacement in text else "")
            problems.append(f"{m.name}: snippet not found in {m.path}{hint}: {snippet!r} -- the code changed; "
                            f"update this entry in scripts/mutation_check.py")
        else:
            problems.append(f"{m.name}: snippet occurs {n} times in {m.path}, must be once: {snippet!r}")
    return problems


def run_mutation(m: Mutation, timeout: float, report) -> bool:
    """Apply m, run each of its tests, restore the file; True if every test failed."""
    path = ROOT / m.path
    original = path.read_bytes()
    st = path.stat()
    text = original.decode()
    caught_all = True
    try:
        path.write_text(text.replace(m.original, m.replacement, 1))
        # A modification time the original never had, so no cached bytecode matches.
        now = max(time.time(), st.st_mtime + 2)
        os.utime(path, (now, now))
        for node in m.tests:
            code, secs, tail = _pytest([node], timeout)
            if code == 1:
                result = "caught"
            elif code == 0:
                result = "MISSED"
            elif code is None:
                result = f"TIMEOUT>{timeout:.0f}s"
            else:
                result = f"ERROR rc={code}"
            caught_all &= result == "caught"
            report(m.name, node, result, secs)
            if result.startswith("ERROR"):
                print(tail, file=sys.stderr)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return caught_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only mutations whose name contains this")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip running the tests unmutated first")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m.name]
    if not chosen:
        print(f"no mutation name contains {args.k!r}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.path}: {m.original.strip()!r} -> {m.replacement.strip()!r}\n"
                  f"    claim: {m.claim}\n" + "".join(f"    test:  {t}\n" for t in m.tests))
        return 0

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    problems = check_snippets(chosen)
    for p in problems:
        print(f"NOT FOUND  {p}", flush=True)
    runnable = [m for m in chosen if not any(p.startswith(f"{m.name}:") for p in problems)]

    if not args.no_baseline and runnable:
        nodes = sorted({t for m in runnable for t in m.tests})
        code, secs, tail = _pytest(nodes, args.timeout)
        print(f"baseline: {len(nodes)} tests on the unmutated code: "
              f"{'pass' if code == 0 else 'FAIL'} ({secs:.0f} s)", flush=True)
        if code != 0:
            print(tail, file=sys.stderr)
            print("the named tests must pass before a mutation can be judged", file=sys.stderr)
            return 2

    width = max(len(m.name) for m in runnable) if runnable else 10
    rows = []

    def report(name, node, result, secs):
        rows.append((name, node, result, secs))
        print(f"{name:<{width}}  {result:<8}  {secs:6.1f} s  {node}", flush=True)

    print(f"{'mutation':<{width}}  {'result':<8}  {'time':>8}  test", flush=True)
    missed = []
    try:
        for m in runnable:
            if not run_mutation(m, args.timeout, report):
                missed.append(m.name)
    except (KeyboardInterrupt, Stop) as e:
        print(f"interrupted ({type(e).__name__} {e}); the mutated file was restored", file=sys.stderr)
        return 130
    total = sum(r[3] for r in rows)
    print(f"\n{len(runnable) - len(missed)} of {len(runnable)} mutations caught by every named test "
          f"({len(rows)} test runs, {total:.0f} s)" + (f"; not caught: {', '.join(missed)}" if missed else ""))
    if problems:
        print(f"{len(problems)} mutation(s) not applied (snippet not found exactly once):")
        for p in problems:
            print(f"  {p}")
        return 2
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
