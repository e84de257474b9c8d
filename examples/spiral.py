"""The CS231n spiral: a two-layer ReLU network separates three interleaved spirals.

The data set of the CS231n case study "Putting it together: minimal neural network": N=100
points per class, D=2, K=3 classes, each class a noisy spiral arm (not linearly separable;
a linear softmax classifier gets about 50 %).  A 2 -> 100 ReLU -> 3 network with a softmax
cross-entropy loss, trained full-batch by SGD with momentum and a little weight decay (the
case study's L2 regularization, reg = 1e-3), fits it::

    model = fnn.Sequential(fnn.Linear(2, 100, rng=rng), fnn.ReLU(), fnn.Linear(100, 3, rng=rng))
    opt = fnn.SGD(model.parameters(), lr=1.0, momentum=0.9, weight_decay=1e-3)
    trainer = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=300, epochs=1000)
    trainer.fit(X, y)

The script prints the training accuracy (it fails below 97 %) and saves the decision
boundary, the network's class on a fine grid (trainer.predict) under the data points, as a
PNG (needs matplotlib; without it the picture is skipped with a message).

    python examples/spiral.py                   # writes spiral.png in the current directory
    python examples/spiral.py --quick --out /tmp/spiral.png
    python examples/spiral.py --dtype float64 --threads 1 --out boundary.png
"""
import argparse
import sys
import time

import numpy as np

import fastnn as fnn

N, D, K = 100, 2, 3          # points per class, dimensions, classes


def spiral_data(seed, dtype):
    """CS231n's spiral data set, drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    X = np.zeros((N * K, D))
    y = np.zeros(N * K, dtype=np.int64)
    for j in range(K):
        ix = range(N * j, N * (j + 1))
        r = np.linspace(0.0, 1, N)                                          # radius
        t = np.linspace(j * 4, (j + 1) * 4, N) + rng.standard_normal(N) * 0.2  # theta
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return X.astype(dtype), y


def save_boundary(trainer, X, y, path, step, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no decision-boundary picture "
              "(pip install matplotlib)")
        return False
    x_min, x_max = X[:, 0].min() - 0.5, X[:, 0].max() + 0.5
    y_min, y_max = X[:, 1].min() - 0.5, X[:, 1].max() + 0.5
    xx, yy = np.meshgrid(np.arange(x_min, x_max, step), np.arange(y_min, y_max, step))
    grid = np.c_[xx.ravel(), yy.ravel()].astype(X.dtype)
    Z = trainer.predict(grid).argmax(axis=1).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.contourf(xx, yy, Z, levels=np.arange(K + 1) - 0.5, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=30, cmap=plt.cm.Spectral, vmin=0, vmax=K - 1,
               edgecolors="k", linewidths=0.6)
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="500 epochs and a coarser grid for the picture (for tests / CI)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 1000, --quick 500)")
    p.add_argument("--batch-size", type=int, default=N * K,
                   help=f"minibatch size (default {N * K}: full batch)")
    p.add_argument("--lr", type=float, default=1.0, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-3,
                   help="L2 regularization (CS231n's reg, 0.5 * reg * ||W||^2)")
    p.add_argument("--hidden", type=int, default=100, help="hidden units")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=None, help="fastnn threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    p.add_argument("--min-accuracy", type=float, default=0.97,
                   help="fail below this training accuracy (default 0.97)")
    p.add_argument("--out", default="spiral.png", help="decision-boundary PNG path "
                   "(default spiral.png in the current directory)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    args = p.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (500 if args.quick else 1000)
    if epochs < 1 or args.batch_size < 1 or args.hidden < 1:
        p.error("--epochs, --batch-size and --hidden must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        fnn.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)

    X, y = spiral_data(args.seed, dtype)
    rng = np.random.default_rng(args.seed)
    model = fnn.Sequential(fnn.Linear(D, args.hidden, dtype=dtype, rng=rng), fnn.ReLU(),
                           fnn.Linear(args.hidden, K, dtype=dtype, rng=rng))
    opt = fnn.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay)
    trainer = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=args.batch_size,
                          epochs=epochs, seed=args.seed, progress=False)
    print(f"spiral: {N * K} points, {K} classes, {dtype.name}; network {D}-{args.hidden}-{K} "
          f"ReLU, softmax cross-entropy")
    print(f"SGD lr={args.lr:g} momentum={args.momentum:g} weight_decay={args.weight_decay:g}, "
          f"batch {args.batch_size}, {epochs} epochs, {fnn.get_num_threads()} threads")

    t0 = time.perf_counter()
    try:
        history = trainer.fit(X, y)
    except FloatingPointError as e:
        raise SystemExit(f"FAIL: training diverged: {e}")
    fit_time = time.perf_counter() - t0
    every = max(1, epochs // 5)
    for i, e in enumerate(history.epochs):
        if e == 1 or e % every == 0:
            print(f"  epoch {e:5d}  loss {history['loss'][i]:.4f}  "
                  f"accuracy {history['accuracy'][i]:.4f}")
    acc = trainer.evaluate(X, y)["accuracy"]
    print(f"training accuracy: {acc:.4f}  (fit {fit_time * 1e3:.0f} ms)")

    if not args.no_plot:
        step = 0.05 if args.quick else 0.01
        if save_boundary(trainer, X, y, args.out, step,
                         f"fastnn {D}-{args.hidden}-{K} ReLU: training accuracy {acc:.1%}"):
            print(f"decision boundary saved to {args.out}")

    if not acc >= args.min_accuracy:
        raise SystemExit(f"FAIL: training accuracy {acc:.4f} < {args.min_accuracy}")
    print(f"OK: training accuracy {acc:.4f} >= {args.min_accuracy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
