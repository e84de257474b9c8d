"""python -m bench [--quick] [--large] [--threads 1,2] [--scenarios ...] [--json PATH]
[--no-plot]: the benchmark suite (see bench/run.py)."""
import sys

from bench.run import main

sys.exit(main())
