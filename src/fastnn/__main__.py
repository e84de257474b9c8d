"""python -m fastnn: the main job -- train a network and compare with NumPy.

Trains a ReLU MLP with softmax cross-entropy and SGD (momentum 0.9) with fastnn's Trainer on
scikit-learn's handwritten digits (64-100-10, 50 epochs, lr 0.1, batch 64, 80/20 split) or,
where scikit-learn is not installed, on the CS231n 3-class spiral (2-100-3, 300 epochs,
lr 0.3, every 5th point held out).  Then it trains the same network from the same
initial weights, on the same minibatches in the same order, with hand-written NumPy
backprop (``fastnn._reference.NumpyMLP``), and prints both accuracies and the speed-up
measured in this run (median of --repeats fits each, alternating).

    python -m fastnn [--quick] [--epochs N] [--threads N] [--dtype float32|float64]
                     [--data digits|spiral] [--repeats R]
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastnn as fnn
from ._reference import NumpyMLP


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2, random_state=0,
                                          stratify=y)
    return "scikit-learn digits (8x8 images, 10 classes)", Xtr, ytr, Xte, yte, 100


def _spiral(n=100, k=3, seed=0):
    """The CS231n spiral: n points per class, k classes, 2-D; every 5th point held out."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n * k, 2))
    y = np.zeros(n * k, np.int64)
    for j in range(k):
        ix = range(n * j, n * (j + 1))
        r = np.linspace(0.0, 1, n)
        t = np.linspace(j * 4, (j + 1) * 4, n) + rng.standard_normal(n) * 0.2
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    test = np.arange(n * k) % 5 == 0
    return ("CS231n spiral (3 classes, 2-D)", X[~test], y[~test], X[test], y[test], 100)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("auto", "digits", "spiral"), default="auto")
    ap.add_argument("--epochs", type=int, default=None,
                    help="default 50 (digits) or 300 (spiral); --quick: a fifth")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default 0.1 (digits), 0.3 (spiral)")
    ap.add_argument("--threads", type=int, default=None,
                    help="fastnn and NumPy's BLAS threads (default: all)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--repeats", type=int, default=3, help="timed fits of each contender")
    ap.add_argument("--quick", action="store_true", help="10 epochs, 1 repeat")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    nt = fnn.get_num_threads()
    cfg = fnn.config()
    print(f"fastnn {fnn.__version__}: kernel {cfg['kernel_variant']}, engine {cfg['engine']}, "
          f"{nt} thread(s), OpenMP {'on' if cfg['openmp'] else 'off'}")

    data = args.data
    if data == "auto":
        try:
            import sklearn  # noqa: F401
            data = "digits"
        except ImportError:
            data = "spiral"
            print('scikit-learn is not installed (pip install "fastnn[examples]" for the '
                  "digits data): training on the spiral instead")
    name, Xtr, ytr, Xte, yte, hidden = _digits() if data == "digits" else _spiral()
    if args.epochs is None:
        args.epochs = 50 if data == "digits" else 300
        if args.quick:
            args.epochs //= 5
    if args.lr is None:
        args.lr = 0.1 if data == "digits" else 0.3
    if args.quick:
        args.repeats = 1
    dt = np.dtype(args.dtype)
    Xtr, Xte = Xtr.astype(dt), Xte.astype(dt)
    d, k = Xtr.shape[1], int(ytr.max()) + 1
    print(f"data: {name}: {len(Xtr)} training / {len(Xte)} test samples")
    print(f"network: {d}-{hidden}-{k} ReLU, softmax cross-entropy, SGD(lr={args.lr}, "
          f"momentum=0.9), batch {args.batch_size}, {args.epochs} epochs, {dt}\n")

    def build():
        rng = np.random.default_rng(0)
        return fnn.Sequential(fnn.Linear(d, hidden, dtype=dt, rng=rng), fnn.ReLU(),
                              fnn.Linear(hidden, k, dtype=dt, rng=rng))

    # the run the user watches, with the progress bar
    model = build()
    trainer = fnn.Trainer(model, fnn.CrossEntropyLoss(),
                          fnn.SGD(model.parameters(), lr=args.lr, momentum=0.9),
                          batch_size=args.batch_size, epochs=args.epochs,
                          progress=not args.no_progress)
    hist = trainer.fit(Xtr, ytr, validation_data=(Xte, yte))
    res = trainer.evaluate(Xte, yte)
    print(f"fastnn: final training loss {hist['loss'][-1]:.4f}, training accuracy "
          f"{hist['accuracy'][-1]:.4f}, test accuracy {res['accuracy']:.4f}")

    # timing: fresh models, the same initial weights and minibatches, alternating
    t_fnn, t_np = [], []
    np_acc = None
    with threadpool_limits(limits=nt):
        for _ in range(args.repeats):
            m = build()
            ref = NumpyMLP.from_model(m, args.lr, 0.9)
            tr = fnn.Trainer(m, fnn.CrossEntropyLoss(),
                             fnn.SGD(m.parameters(), lr=args.lr, momentum=0.9),
                             batch_size=args.batch_size, epochs=args.epochs, progress=False)
            time.sleep(0.2)
            t = time.perf_counter()
            tr.fit(Xtr, ytr)
            t_fnn.append(time.perf_counter() - t)
            time.sleep(0.2)
            t = time.perf_counter()
            ref.fit(Xtr, ytr, args.batch_size, args.epochs, seed=0)
            t_np.append(time.perf_counter() - t)
            np_acc = ref.accuracy(Xte, yte)
            fnn_acc = tr.evaluate(Xte, yte)["accuracy"]
    tf, tn = statistics.median(t_fnn), statistics.median(t_np)
    steps = args.epochs * -(-len(Xtr) // args.batch_size)
    print(f"\nfit time, median of {args.repeats} ({steps} steps, {nt} thread(s)):")
    print(f"  fastnn  {tf * 1e3:8.1f} ms  {tf / steps * 1e6:7.1f} us/step  "
          f"test accuracy {fnn_acc:.4f}")
    print(f"  NumPy   {tn * 1e3:8.1f} ms  {tn / steps * 1e6:7.1f} us/step  "
          f"test accuracy {np_acc:.4f}")
    print(f"  speed-up vs NumPy: {tn / tf:.1f}x")
    if abs(fnn_acc - np_acc) > 0.05:
        print("WARNING: fastnn and NumPy accuracies differ by more than 0.05", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
