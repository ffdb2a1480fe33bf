"""`dlrm-scaling demo`: the whole study in small, on synthetic data, on a CPU.

A data sweep, two parameter schemes (embedding dimension, top-MLP width) and a
compute grid, each from the `small` preset at CPU-sized example counts, then the
scaling-law analysis of all of them into DIR/report.  Rerunning resumes: finished
runs are skipped.  Sizes were chosen so the data sweep sits where NE bends
toward the generator's Bayes NE (docs/DESIGN.md section 3.1) and everything finishes
in about ten minutes on two cores (docs/BENCHMARKS.md has the measured time).
"""
from __future__ import annotations

import time
from pathlib import Path

from sweeps.runner import run_sweep

PRESET = "small"
# Per sweep: overrides on top of the preset.  The sweeps derive their points
# from this base (see each sweeps/*.py).
SWEEPS = {
    "data": ["train.examples=2**19"],          # 2^14 .. 2^19 examples
    "embedding_dim": ["train.examples=2**18"],  # D = 4 .. 64
    "top_mlp": ["train.examples=2**18"],        # top widths x 1/4 .. x 4
    "compute": ["train.examples=2**18"],        # 3 top-MLP widths x 2^15 .. 2^18 examples
}


def demo(out: str | Path, workers: int = 1, log=print, preset: str = PRESET,
         sweeps: dict[str, list[str]] | None = None, bootstrap: int = 200) -> int:
    out = Path(out)
    t0 = time.time()
    failed = 0
    for name, overrides in (SWEEPS if sweeps is None else sweeps).items():
        rows = run_sweep(name, out / name, preset, overrides, workers=workers, log=log)
        failed += sum(r["status"] != "done" for r in rows)
    log(f"training finished in {time.time() - t0:.0f} s; fitting scaling laws ...")

    from analysis.render import summary_text
    from analysis.report import write_report
    fits = write_report(out, out / "report", bootstrap=bootstrap)
    log("")
    log(summary_text(fits))
    log(f"\ndemo finished in {time.time() - t0:.0f} s; report: {out / 'report' / 'report.md'}")
    return 2 if failed else 0
