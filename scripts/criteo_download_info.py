#!/usr/bin/env python
"""Where to get the Criteo click logs, how big they are, how many rows to expect.

Prints only (never downloads; no network use).  Criteo's terms: research,
non-commercial use (the 1TB logs are CC BY-NC-SA 4.0); do not redistribute.

    python scripts/criteo_download_info.py            # human-readable
    python scripts/criteo_download_info.py --json     # for scripts

After downloading:
    dlrm-scaling data criteo-prepare --src train.txt --split kaggle-dlrm --out data/kaggle
    dlrm-scaling data criteo-prepare --src day_*.gz --split terabyte --workers 8 --out data/1tb
"""
from __future__ import annotations

import argparse
import json

# Rows per day of the 1TB logs (day_0 .. day_23), as counted by TorchRec's and
# MLPerf's preprocessing; they sum to 4,373,472,329.
TERABYTE_DAY_ROWS = [
    195_841_983, 199_563_535, 196_792_019, 181_115_208, 152_115_810, 172_548_507,
    204_846_845, 200_801_003, 193_772_492, 198_424_372, 185_778_055, 153_588_700,
    169_003_364, 194_216_520, 194_081_279, 187_154_596, 177_984_934, 163_382_602,
    142_061_091, 156_534_237, 193_627_464, 192_215_183, 189_747_893, 178_274_637]

DATASETS = {
    "kaggle": {
        "name": "Criteo Display Advertising Challenge (Kaggle, 2014)",
        "pages": ["https://ailab.criteo.com/ressources/",
                  "https://www.kaggle.com/c/criteo-display-ad-challenge"],
        "files": [{
            "url": "https://go.criteo.net/criteo-research-kaggle-display-advertising-"
                   "challenge-dataset.tar.gz",
            "size": "about 4.3 GB",
            "contents": {"train.txt": {"rows": 45_840_617, "size": "about 11.1 GB",
                                       "note": "7 days, labelled; the file to prepare"},
                         "test.txt": {"rows": 6_042_135, "size": "about 1.5 GB",
                                      "note": "day 8, no labels (competition test set)"}}}],
        "prepare": "--src train.txt --split kaggle-dlrm",
        "rows": 45_840_617,
    },
    "terabyte": {
        "name": "Criteo 1TB Click Logs (24 days)",
        "pages": ["https://ailab.criteo.com/download-criteo-1tb-click-logs-dataset/",
                  "https://huggingface.co/datasets/criteo/CriteoClickLogs"],
        "files": [{"url": f"https://huggingface.co/datasets/criteo/CriteoClickLogs/resolve/"
                          f"main/day_{d}.gz",
                   "mirror": f"https://storage.googleapis.com/criteo-cail-datasets/day_{d}.gz",
                   "name": f"day_{d}.gz", "rows": rows,
                   "size": "about 13-16 GB gzipped, 45-55 GB plain"}
                  for d, rows in enumerate(TERABYTE_DAY_ROWS)],
        "prepare": "--src day_0.gz ... day_23.gz --split terabyte",
        "rows": sum(TERABYTE_DAY_ROWS),
        "size": "about 343 GB gzipped, about 1.3 TB plain",
    },
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    a = ap.parse_args(argv)
    if a.json:
        print(json.dumps(DATASETS, indent=1))
        return 0
    for key, ds in DATASETS.items():
        print(f"== {ds['name']}  [{key}]: {ds['rows']:,} labelled rows"
              + (f", {ds['size']}" if "size" in ds else ""))
        for page in ds["pages"]:
            print(f"   page: {page}")
        for f in ds["files"]:
            line = f"   {f['url']}  ({f['size']}"
            print(line + (f", {f['rows']:,} rows)" if "rows" in f else ")"))
            if "mirror" in f:
                print(f"     mirror: {f['mirror']}")
            for name, c in f.get("contents", {}).items():
                print(f"     {name}: {c['rows']:,} rows, {c['size']} - {c['note']}")
        print(f"   then: dlrm-scaling data criteo-prepare {ds['prepare']} --out DATA_DIR\n")
    print("Terms: research and non-commercial use only; do not redistribute the logs.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
