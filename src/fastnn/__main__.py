"""python -m fastnn: print the configuration and run a short GEMM benchmark.

(The full main job -- training a network and comparing against NumPy -- arrives with the
Trainer; see the README.)
"""
import sys

from . import show_config
from ._bench import main as bench_main


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    show_config()
    print()
    bench_main(["--quick"] + list(argv))


if __name__ == "__main__":
    main()
