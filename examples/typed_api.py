"""A tour of fastnn's public API, written with type annotations.

CI runs ``mypy --strict examples/typed_api.py`` against the installed wheel (which ships
``py.typed``), so this file checks that the public names are annotated well enough for a
strictly typed user script, and it runs as a test too (tests/test_examples.py)::

    python examples/typed_api.py
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import numpy.typing as npt

import fastnn as fnn
from fastnn.optim.lr_scheduler import CosineAnnealingLR, StepLR


def make_data(n: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Two interleaved spirals' worth of points in 2-D, three classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    r = rng.uniform(0.2, 1.0, size=n)
    t = 4.0 * r + y * (2 * np.pi / 3) + rng.normal(0.0, 0.2, size=n)
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1).astype(np.float32)
    return x, y.astype(np.int64)


def build(seed: int = 0) -> fnn.Sequential:
    rng = np.random.default_rng(seed)
    layers: list[fnn.Module] = [fnn.Linear(2, 64, rng=rng), fnn.ReLU(),
                                fnn.Linear(64, 64, rng=rng), fnn.Tanh(),
                                fnn.Linear(64, 3, rng=rng)]
    return fnn.Sequential(*layers)


def main() -> float:
    x, y = make_data(2000)
    model = build()
    loss_fn = fnn.CrossEntropyLoss()

    # the module path: forward, loss, backward, update
    opt: fnn.optim.Optimizer = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        model.zero_grad()
        out: npt.NDArray[np.float32] = model(x[:128])
        value: float = loss_fn(out, y[:128])
        model.backward(loss_fn.backward())
        opt.step()
    assert np.isfinite(value)

    # one compiled training step, then a Trainer with a scheduler callback
    step: fnn.CompiledStep = fnn.compile_step(model, loss_fn, opt)
    first: float = step(x[:128], y[:128])
    adam = fnn.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = CosineAnnealingLR(adam, T_max=20)
    trainer = fnn.Trainer(model, loss_fn, adam, batch_size=64, epochs=20, seed=1,
                          progress=False)
    history: fnn.History = trainer.fit(x, y, callbacks=[fnn.LRSchedulerCallback(sched)])
    losses: list[float] = history["loss"]
    acc: float = trainer.evaluate(x, y)["accuracy"]
    StepLR(fnn.SGD(model.parameters(), lr=0.1), step_size=5)

    # gradients checked against finite differences, in float64
    small = fnn.Sequential(fnn.Linear(2, 4, dtype=np.float64), fnn.Sigmoid(),
                           fnn.Linear(4, 3, dtype=np.float64))
    report: fnn.GradcheckReport = fnn.gradcheck(small, x[:8].astype(np.float64))
    assert report, str(report)

    # inference and save/load
    model.eval()
    predict: fnn.InferenceFunction = fnn.compile_inference(model)
    logits = predict(x[:16])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.npz")
        fnn.save(model, path)
        again: fnn.Module = fnn.load(path)
        np.testing.assert_array_equal(again(x[:16]), logits)
        fnn.save_checkpoint(os.path.join(d, "ckpt.npz"), model, adam, epoch=20)
        ck: fnn.Checkpoint = fnn.load_checkpoint(os.path.join(d, "ckpt.npz"), model, adam)
        assert ck.epoch == 20
    print(f"first compiled-step loss {first:.4f}, final loss {losses[-1]:.4f}, "
          f"accuracy {acc:.3f}, threads {fnn.get_num_threads()}, "
          f"kernel {fnn.get_kernel_variant()}")
    return acc


if __name__ == "__main__":
    main()
