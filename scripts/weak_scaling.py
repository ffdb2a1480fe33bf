"""Weak scaling of the compiled train step on fake CPU devices: bytes and memory per device.

Compiles (never runs) the criteo-mlperf-shaped step with tables capped at
100k rows, 512 examples per device, for 4..32 devices and each placement,
through `dlrm-scaling compile --devices N --json` (one process per device
count), and prints the docs/BENCHMARKS.md table.

    nice -n 10 python scripts/weak_scaling.py [--devices 4,8,16,32] [--sharding row,table,auto] [--out FILE.jsonl]
"""
import argparse
import json
import subprocess
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", default="4,8,16,32")
    p.add_argument("--sharding", default="row,table,auto")
    p.add_argument("--per-device-batch", type=int, default=512)
    p.add_argument("--table-rows", type=int, default=100_000)
    p.add_argument("--out", help="append each report (JSON) here")
    args = p.parse_args()
    rows = []
    for sharding in args.sharding.split(","):
        for n in (int(x) for x in args.devices.split(",")):
            cmd = [sys.executable, "-m", "dlrm_jax", "compile", "--preset", "criteo-mlperf", "--devices", str(n),
                   "--batch", str(args.per_device_batch * n), "--json",
                   "--set", f"model.table_rows={args.table_rows}", "--set", f"embedding.sharding={sharding}"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            rows.append((sharding, n, r))
            print(_line(sharding, n, r), flush=True)
    return 0


def _line(sharding, n, r) -> str:
    c = r["collectives"]
    kinds = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(c.items()))
    return (f"| {sharding} | {n} | {r['collective_bytes'] / 1e6:.1f} | {kinds} | "
            f"{r['owner_routed_bound_bytes'] / 1e6:.1f} | {r['collective_bytes_over_bound']:.2f} | "
            f"{r['memory']['temp'] / 1e6:.1f} | {r['memory']['argument'] / 1e6:.1f} | {r['compile_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
