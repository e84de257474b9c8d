"""Handwritten digits: fastnn's Trainer against scikit-learn's MLPClassifier.

scikit-learn's ``load_digits`` (1797 8x8 images, 10 classes; pixels scaled to [0, 1] by
X / 16) is split 80/20, stratified (random_state=0).  Both libraries train the same network,
64 -> 100 ReLU -> 10 with a softmax cross-entropy loss, by minibatch SGD with the same
hyperparameters: batch 64, 50 epochs, learning rate 0.1, classical (not Nesterov) momentum
0.9, no L2 penalty, data reshuffled every epoch.  (Only the weight initialisation differs:
fastnn draws PyTorch's U(-1/sqrt(in), 1/sqrt(in)), scikit-learn Glorot's.)

fastnn::

    model = fnn.Sequential(fnn.Linear(64, 100, rng=rng), fnn.ReLU(), fnn.Linear(100, 10, rng=rng))
    opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=64, epochs=50)
    history = trainer.fit(X_train, y_train, validation_data=(X_test, y_test))
    trainer.evaluate(X_test, y_test)["accuracy"]

scikit-learn::

    MLPClassifier(hidden_layer_sizes=(100,), solver="sgd", batch_size=64, max_iter=50,
                  learning_rate_init=0.1, momentum=0.9, nesterovs_momentum=False, alpha=0,
                  n_iter_no_change=50)       # never stops early

The script prints the learning curve of fastnn, the test accuracy of both, and the fit time of
both (median of 3 fits of fresh models, same process and data; fastnn's fits are run without
validation data so both do the same work), and fails if fastnn's test accuracy is below
0.95.  ``--plot PATH`` saves fastnn's loss/accuracy curves (History.plot, needs matplotlib).

    python examples/digits.py
    python examples/digits.py --quick            # 10 epochs, one timing fit, bound 0.9
    python examples/digits.py --threads 1 --dtype float64 --plot digits.png
"""
import argparse
import statistics
import sys
import time
import warnings

import numpy as np

import fastnn as fnn

try:
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
except ImportError:
    load_digits = None


def load_data(dtype):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    y = y.astype(np.int64)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


def make_fastnn(args, dtype, seed):
    rng = np.random.default_rng(seed)
    model = fnn.Sequential(fnn.Linear(64, args.hidden, dtype=dtype, rng=rng), fnn.ReLU(),
                           fnn.Linear(args.hidden, 10, dtype=dtype, rng=rng))
    opt = fnn.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    return fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=args.batch_size,
                       epochs=args.epochs, shuffle=True, seed=seed, progress=False)


def make_sklearn(args, seed):
    return MLPClassifier(hidden_layer_sizes=(args.hidden,), activation="relu", solver="sgd",
                         batch_size=args.batch_size, max_iter=args.epochs,
                         learning_rate="constant", learning_rate_init=args.lr,
                         momentum=args.momentum, nesterovs_momentum=False, alpha=0.0,
                         shuffle=True, n_iter_no_change=args.epochs, tol=0.0,
                         early_stopping=False, random_state=seed)


def fit_sklearn(clf, X, y):
    with warnings.catch_warnings():
        # max_iter reached on purpose: a fixed number of epochs, as in fastnn
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf


def median_time(fit, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit()
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
                   help="10 epochs, one timing fit, accuracy bound 0.9 (for tests / CI)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 50, --quick 10)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed fits per library, the median is reported (default 3, "
                        "--quick 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=100, help="hidden units")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the data (both libraries) and of fastnn's model")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for fastnn and for NumPy's BLAS (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and shuffling")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="fail below this fastnn test accuracy (default 0.95, --quick 0.9)")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="save fastnn's learning curves as a PNG (needs matplotlib)")
    args = p.parse_args(argv)
    if load_digits is None:
        raise SystemExit("digits.py needs scikit-learn: pip install 'fastnn[examples]' "
                         "(or pip install scikit-learn)")
    epochs = args.epochs if args.epochs is not None else (10 if args.quick else 50)
    repeats = args.repeats or (1 if args.quick else 3)
    bound = args.min_accuracy if args.min_accuracy is not None else \
        (0.9 if args.quick else 0.95)
    if epochs < 1 or repeats < 1 or args.batch_size < 1 or args.hidden < 1:
        p.error("--epochs, --repeats, --batch-size and --hidden must be >= 1")
    args.epochs = epochs
    dtype = np.dtype(args.dtype)

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

    X_train, X_test, y_train, y_test = load_data(dtype)
    print(f"digits: {len(X_train)} training / {len(X_test)} test images, 64 features, "
          f"10 classes, {dtype.name}")
    print(f"network 64-{args.hidden}-10 ReLU, softmax cross-entropy; SGD lr={args.lr:g} "
          f"momentum={args.momentum:g} (not Nesterov), batch {args.batch_size}, "
          f"{epochs} epochs")
    print(f"threads: fastnn {fnn.get_num_threads()}, NumPy BLAS (scikit-learn) "
          f"{blas_threads()}")
    print()

    # ---- fastnn: one fit with validation data, for the learning curve and the accuracy
    trainer = make_fastnn(args, dtype, args.seed)
    try:
        history = trainer.fit(X_train, y_train, validation_data=(X_test, y_test))
    except FloatingPointError as e:
        raise SystemExit(f"FAIL: fastnn training diverged: {e}")
    every = max(1, epochs // 10)
    print("fastnn learning curve")
    print(f"{'epoch':>6} {'loss':>8} {'accuracy':>9} {'val_loss':>9} {'val_accuracy':>13}")
    for i, e in enumerate(history.epochs):
        if e % every == 0 or e == history.epochs[-1] or e == 1:
            print(f"{e:6d} {history['loss'][i]:8.4f} {history['accuracy'][i]:9.4f} "
                  f"{history['val_loss'][i]:9.4f} {history['val_accuracy'][i]:13.4f}")
    acc_fnn = trainer.evaluate(X_test, y_test)["accuracy"]
    if args.plot:
        try:
            history.plot(args.plot)
            print(f"learning curves saved to {args.plot}")
        except ImportError as e:
            print(f"no plot: {e}")
    print()

    # ---- scikit-learn
    clf = fit_sklearn(make_sklearn(args, args.seed), X_train, y_train)
    acc_skl = clf.score(X_test, y_test)

    # ---- fit times: fresh models, same data, median of `repeats`
    def fit_fnn():
        make_fastnn(args, dtype, args.seed).fit(X_train, y_train)

    def fit_skl():
        fit_sklearn(make_sklearn(args, args.seed), X_train, y_train)

    t_fnn = median_time(fit_fnn, repeats)
    t_skl = median_time(fit_skl, repeats)

    print(f"{'':14}{'test accuracy':>14}{'fit time':>12}")
    print(f"{'fastnn':14}{acc_fnn:14.4f}{t_fnn * 1e3:9.1f} ms")
    print(f"{'scikit-learn':14}{acc_skl:14.4f}{t_skl * 1e3:9.1f} ms")
    print(f"speed-up (fit time, median of {repeats}): {t_skl / t_fnn:.1f}x")

    if limiter is not None:
        limiter.restore_original_limits()
    if not acc_fnn >= bound:
        raise SystemExit(f"FAIL: fastnn test accuracy {acc_fnn:.4f} < {bound}")
    print(f"OK: fastnn test accuracy {acc_fnn:.4f} >= {bound}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
