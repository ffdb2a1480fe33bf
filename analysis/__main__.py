"""`python -m analysis [analyze] PATH --out DIR ...` (same as `dlrm-scaling analyze`)."""

import sys

from analysis.cli import main

argv = sys.argv[1:]
if argv[:1] == ["analyze"]:
    argv = argv[1:]
sys.exit(main(argv))
