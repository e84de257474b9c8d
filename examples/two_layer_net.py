"""The CS231n lecture's two-layer network, in 20 lines of NumPy and in fastnn.

The lecture ("Neural Networks and Backpropagation") trains a fully-connected network with
NumPy alone: N=64 random inputs of D_in=1000 features, a hidden layer of H=100 sigmoid
units, D_out=10 outputs, no biases, the sum of squared errors as the loss, and plain
gradient descent with learning rate 1e-4 for 2000 steps, all in float64.

This script runs that code (as in the lecture: ``two_layer_step`` in
fastnn/_reference.py, shared with the tests and the benchmark) and the same network in
fastnn::

    model = fnn.Sequential(fnn.Linear(1000, 100, bias=False, dtype=np.float64),
                           fnn.Sigmoid(),
                           fnn.Linear(100, 10, bias=False, dtype=np.float64))
    model[0].weight.data = w1.T            # a Linear's weight is (out, in)
    model[2].weight.data = w2.T
    step = fnn.compile_step(model, fnn.MSELoss(reduction="sum"),
                            fnn.SGD(model.parameters(), lr=1e-4))
    for t in range(2000):
        loss = step(x, y)                  # zero_grad + forward + loss + backward + update

from the same data and initial weights.  It prints both losses every 100 steps side by side
and fails unless they agree to a relative 1e-9 at every step.  Then it times both training
loops (same process, same data and initial weights, one warm-up run, median of several
repeats), in float64 and in float32 (fastnn float32 against the same NumPy code in float32).

    python examples/two_layer_net.py            # 2000 steps, median of 3 timed runs
    python examples/two_layer_net.py --quick    # 200 steps (a few seconds)
    python examples/two_layer_net.py --threads 1
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastnn as fnn
from fastnn._reference import two_layer_train

N, D_IN, H, D_OUT = 64, 1000, 100, 10
LR = 1e-4
RTOL = 1e-9          # float64: fastnn and NumPy must agree this well at every step
RTOL32 = 1e-3        # float32: a loose bound (the two round differently)


def numpy_train(x, y, w1, w2, steps):
    """The lecture's NumPy network (fastnn._reference.two_layer_step, its loop body
    verbatim); returns the loss at each step."""
    return two_layer_train(x, y, w1, w2, steps, lr=LR)[0]


class FastnnNet:
    """The same network in fastnn, with one compiled training step."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.model = fnn.Sequential(fnn.Linear(D_IN, H, bias=False, dtype=dtype),
                                    fnn.Sigmoid(),
                                    fnn.Linear(H, D_OUT, bias=False, dtype=dtype))
        self.loss_fn = fnn.MSELoss(reduction="sum")
        self.opt = fnn.SGD(self.model.parameters(), lr=LR)
        self.step = fnn.compile_step(self.model, self.loss_fn, self.opt)
        if not self.step.compiled:
            raise SystemExit(f"compile_step did not compile this network: {self.step.reason}")

    def reset(self, w1, w2):
        # NumPy's w1 is (D_in, H), a Linear's weight (out_features, in_features) = w1.T;
        # assigning .data copies into the parameter (and casts float64 -> float32)
        self.model[0].weight.data = w1.T
        self.model[2].weight.data = w2.T

    def train(self, x, y, w1, w2, steps):
        self.reset(w1, w2)
        step = self.step
        losses = np.empty(steps)
        for t in range(steps):
            losses[t] = step(x, y)
        return losses


def timed(fn, steps, repeats):
    """Median wall time of fn(steps) over `repeats` runs, after a short warm-up run."""
    fn(min(steps, 20))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(steps)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    n = {d.get("num_threads") for d in threadpool_info() if d.get("user_api") == "blas"}
    return ",".join(str(v) for v in sorted(n)) or "?"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="200 steps instead of 2000 (for tests / CI)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 2000)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timing repeats, the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for fastnn and for NumPy's BLAS (default: all cores)")
    p.add_argument("--print-every", type=int, default=100, help="loss print interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and weights")
    p.add_argument("--no-timing", action="store_true", help="only the correctness check")
    args = p.parse_args(argv)
    steps = args.steps or (200 if args.quick else 2000)
    repeats = args.repeats or 3
    if steps < 1 or repeats < 1 or args.print_every < 1:
        p.error("--steps, --repeats and --print-every must be >= 1")

    limiter = None
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        fnn.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=args.threads, user_api="blas")
        except ImportError:
            print("threadpoolctl missing: NumPy's BLAS keeps its own thread count")

    # the lecture: x, y, w1, w2 all drawn from randn
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((N, D_IN))
    y = rng.standard_normal((N, D_OUT))
    w1 = rng.standard_normal((D_IN, H))
    w2 = rng.standard_normal((H, D_OUT))

    print(f"CS231n two-layer net: N={N}, D_in={D_IN}, H={H} (sigmoid), D_out={D_OUT}, "
          f"no biases, sum of squares, SGD lr={LR:g}, {steps} steps")
    print(f"threads: fastnn {fnn.get_num_threads()}, NumPy BLAS {blas_threads()}  "
          f"(engine {fnn.get_engine()}, kernel {fnn.get_kernel_variant()})")
    print()

    # ---- correctness: float64, loss at every step
    ref = numpy_train(x, y, w1, w2, steps)
    net64 = FastnnNet(np.float64)
    ours = net64.train(x, y, w1, w2, steps)
    rel = np.abs(ours - ref) / np.abs(ref)
    print(f"{'step':>6}  {'NumPy loss':>22}  {'fastnn loss':>22}  {'rel. diff':>9}")
    printed = sorted(set(range(0, steps, args.print_every)) | {steps - 1})
    for t in printed:
        print(f"{t:6d}  {ref[t]:22.15g}  {ours[t]:22.15g}  {rel[t]:9.1e}")
    worst = int(np.argmax(rel))
    print(f"max relative difference over all {steps} steps: {rel[worst]:.2e} "
          f"(step {worst}); tolerance {RTOL:g}")
    if not np.all(np.isfinite(ours)) or not rel[worst] < RTOL:
        raise SystemExit(f"FAIL: fastnn's loss differs from NumPy's at step {worst}: "
                         f"{ours[worst]!r} vs {ref[worst]!r} (relative {rel[worst]:.2e} "
                         f">= {RTOL:g})")
    if not ref[-1] < ref[0]:
        raise SystemExit(f"FAIL: the network did not learn (loss {ref[0]:.6g} -> "
                         f"{ref[-1]:.6g})")
    print(f"OK: the losses agree at every step (loss {ref[0]:.6g} -> {ref[-1]:.6g})")

    # float32: the same code on float32 data tracks float64 only approximately
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    w1_32, w2_32 = w1.astype(np.float32), w2.astype(np.float32)
    net32 = FastnnNet(np.float32)
    l32 = net32.train(x32, y32, w1_32, w2_32, steps)
    n32 = numpy_train(x32, y32, w1_32, w2_32, steps)
    d32 = np.abs(l32 - n32) / np.abs(n32)
    print(f"float32: final loss fastnn {l32[-1]:.9g}, NumPy {n32[-1]:.9g} "
          f"(float64: {ref[-1]:.9g})")
    print(f"float32: max relative difference fastnn vs NumPy over all {steps} steps: "
          f"{d32.max():.1e} (rounding; tolerance {RTOL32:g})")
    if not (np.all(np.isfinite(l32)) and d32.max() < RTOL32):
        raise SystemExit(f"FAIL: fastnn's float32 loss strays from NumPy's float32 loss "
                         f"(relative {d32.max():.2e} at step {int(np.argmax(d32))})")

    # ---- timing
    if not args.no_timing:
        print()
        print(f"timing {steps} training steps: median of {repeats} runs after a warm-up "
              f"(threads: fastnn {fnn.get_num_threads()}, NumPy BLAS {blas_threads()})")
        print(f"{'':9}{'NumPy':>24}{'fastnn':>24}{'speed-up':>10}")
        for name, net, data in (("float64", net64, (x, y, w1, w2)),
                                ("float32", net32, (x32, y32, w1_32, w2_32))):
            t_np = timed(lambda n: numpy_train(*data, n), steps, repeats)
            t_fn = timed(lambda n: net.train(*data, n), steps, repeats)
            cols = []
            for t in (t_np, t_fn):
                cols.append(f"{steps / t:9.0f} steps/s {t / steps * 1e6:6.1f} us")
            print(f"{name:9}{cols[0]:>24}{cols[1]:>24}{t_np / t_fn:9.2f}x")

    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
