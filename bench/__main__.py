"""`python -m bench report [--check]` (bench/report.py); each benchmark runs as `python -m bench.bench_NAME`."""

import sys

from bench.report import main

if __name__ == "__main__":
    if sys.argv[1:2] != ["report"]:
        sys.exit("usage: python -m bench report [--check] (benchmarks: python -m bench.bench_NAME --help)")
    sys.exit(main(sys.argv[2:]))
