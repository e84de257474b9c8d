"""A residual MLP on handwritten digits, built with fastnn.Graph and trained with Trainer.

scikit-learn's ``load_digits`` (1797 8x8 images, 10 classes; pixels scaled to [0, 1] by
X / 16) is split 80/20, stratified (random_state=0).  The network has two residual blocks::

    x -> Linear(64, H) -> ReLU -> h0
    h0 -> Linear(H, H) -> ReLU -> Linear(H, H) -> (+ h0) -> ReLU -> h1      block 1
    h1 -> Linear(H, H) -> ReLU -> Linear(H, H) -> (+ h1) -> ReLU -> h2      block 2
    h2 -> Linear(H, 10) -> logits

where each "(+ h)" is an ``Add`` gate: the value h branches into the block and around it
(the skip connection), and backward sums the two gradients that reach it.  The Linear ->
ReLU pairs run as fused kernels, and the whole graph compiles: the Trainer runs every
training step (forward, loss, backward, update) as one kernel call, bitwise equal to the
graph's module path.  Trained by minibatch SGD (batch 64, lr 0.05, momentum 0.9) with a
softmax cross-entropy loss; prints the learning curve and the test accuracy, and fails if
the test accuracy is below 0.95 (0.9 with --quick).

    python examples/residual_mlp.py
    python examples/residual_mlp.py --quick          # 8 epochs (a few seconds)
"""
import argparse
import sys
import time
import warnings

import numpy as np

import fastnn as fnn

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError:
    load_digits = None


def residual_mlp(hidden, blocks, dtype, rng):
    g = fnn.Graph()
    x = g.input("x", features=64)
    h = g.add(fnn.ReLU(), g.add(fnn.Linear(64, hidden, dtype=dtype, rng=rng), x))
    for _ in range(blocks):
        r = g.add(fnn.ReLU(), g.add(fnn.Linear(hidden, hidden, dtype=dtype, rng=rng), h))
        r = g.add(fnn.Linear(hidden, hidden, dtype=dtype, rng=rng), r)
        h = g.add(fnn.ReLU(), g.add(fnn.Add(), r, h))          # the skip connection
    g.output(g.add(fnn.Linear(hidden, 10, dtype=dtype, rng=rng), h))
    return g


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few epochs (a few seconds)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 40, --quick 8)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units")
    p.add_argument("--blocks", type=int, default=2, help="residual blocks")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=None,
                   help="fastnn threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and shuffling")
    args = p.parse_args(argv)
    if load_digits is None:
        raise SystemExit("residual_mlp.py needs scikit-learn: pip install 'fastnn[examples]' "
                         "(or pip install scikit-learn)")
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    epochs = args.epochs if args.epochs is not None else (8 if args.quick else 40)
    bound = 0.9 if args.quick else 0.95
    dtype = np.dtype(args.dtype)

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    X_train, X_test, y_train, y_test = train_test_split(X, y.astype(np.int64), test_size=0.2,
                                                        stratify=y, random_state=0)
    model = residual_mlp(args.hidden, args.blocks, dtype, np.random.default_rng(args.seed))
    print(model)
    opt = fnn.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # a Graph of Linear, activation and gate nodes compiles (compile_step): the Trainer runs
    # each chunk of steps in one kernel call.  A graph that did not compile would train on
    # the module path after a RuntimeWarning; here that is an error.
    trainer = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=64, epochs=epochs,
                          seed=args.seed, progress=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compile_step", category=RuntimeWarning)
        history = trainer.fit(X_train, y_train, validation_data=(X_test, y_test))
    elapsed = time.perf_counter() - t0
    print("epoch   loss    accuracy  val_loss  val_accuracy")
    for e in range(len(history)):
        print(f"{e + 1:5d}  {history['loss'][e]:.4f}  {history['accuracy'][e]:.4f}    "
              f"{history['val_loss'][e]:.4f}    {history['val_accuracy'][e]:.4f}")
    acc = trainer.evaluate(X_test, y_test)["accuracy"]
    print(f"test accuracy: {acc:.4f} ({len(y_test)} test images; {epochs} epochs in "
          f"{elapsed:.2f} s, compiled step, {fnn.get_num_threads()} threads, {dtype})")
    if acc < bound:
        print(f"FAIL: test accuracy {acc:.4f} < {bound}")
        return 1
    print(f"OK: test accuracy {acc:.4f} >= {bound}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
