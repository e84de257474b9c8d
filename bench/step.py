"""Training-step benchmark: python bench/step.py [--threads 1,2] [--quick] [--json PATH]

The step scenarios of the benchmark suite (bench/run.py, ``python -m bench``): one SGD step
(forward, loss, backward, update) of the CS231n 2-layer network (float64 and float32), the
tiny 2-64-64-3 network and 784-512-512-10 (batch 128; 1024 without --quick), from the same
weights and data, with fastnn's compiled step (compile_step), fastnn's modules, hand-written
NumPy backprop and PyTorch autograd with torch.optim.SGD (when torch is installed), after a
cross-check of their losses.  Same method as the suite: interleaved blocks with a 0.3 s
pause before each multi-threaded one, median of 7 blocks (3 with --quick), ratios to fastnn
compiled from the same run; results in bench/results/<timestamp>.json, no chart.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.run import main
    sys.exit(main(["--scenarios", "cs231n,tiny,mnist", "--no-plot", *sys.argv[1:]]))
