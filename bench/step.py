"""Training-step benchmark: python -m bench.step [--threads 1,2] [--quick] [--json PATH]

(run from the repository root; needs fastnn importable, e.g. PYTHONPATH=src)

The step scenarios of the benchmark suite (bench/run.py, ``python -m bench``): one SGD step
(forward, loss, backward, update) of the CS231n 2-layer network (float64 and float32), the
tiny 2-64-64-3 network, 784-512-512-10 (batch 128; 1024 without --quick) and the residual
MLP (a compiled fastnn.Graph), from the same weights and data, with fastnn's compiled step
(compile_step), fastnn's modules, hand-written NumPy backprop and PyTorch autograd with
torch.optim.SGD (when torch is installed), after a cross-check of their losses.  Same
method as the suite: interleaved blocks with a 0.3 s pause before each multi-threaded one,
median of 7 blocks (3 with --quick), ratios to fastnn compiled from the same run; results
in bench/results/<timestamp>.json, no chart.
"""
import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main(["--scenarios", "cs231n,tiny,mnist,residual", "--no-plot", *sys.argv[1:]]))
