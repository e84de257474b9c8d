"""The CS231n two-layer network (the lecture's "train a 2-layer net in 20 lines of NumPy"),
trained with fastnn from the same initial weights: the loss matches the NumPy version
(fastnn._reference.two_layer_train, the lecture's code) at every one of 2000 steps."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn._reference import two_layer_train

N, D_IN, H, D_OUT = 64, 1000, 100, 10
STEPS = 2000
LR = 1e-4


def fastnn_two_layer(x, y, w1, w2, steps=STEPS, dtype=np.float64):
    model = fnn.Sequential(fnn.Linear(D_IN, H, bias=False, dtype=dtype), fnn.Sigmoid(),
                           fnn.Linear(H, D_OUT, bias=False, dtype=dtype))
    # NumPy's w1 is (D_in, H); a Linear's weight is (out, in)
    model[0].weight.data = w1.T
    model[2].weight.data = w2.T
    loss_fn = fnn.MSELoss(reduction="sum")
    opt = fnn.SGD(model.parameters(), lr=LR)
    x, y = x.astype(dtype), y.astype(dtype)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        losses.append(loss)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return np.array(losses), model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2026)
    # the lecture draws everything from randn
    return (rng.standard_normal((N, D_IN)), rng.standard_normal((N, D_OUT)),
            rng.standard_normal((D_IN, H)), rng.standard_normal((H, D_OUT)))


@pytest.mark.parametrize("engine_name", ["native", "blas"])
def test_two_layer_net_matches_numpy_every_step(data, engine_name):
    fnn.set_engine(engine_name)
    x, y, w1, w2 = data
    ref, rw1, rw2 = two_layer_train(x, y, w1, w2, STEPS, lr=LR)
    ours, model = fastnn_two_layer(x, y, w1, w2)
    assert ours.shape == (STEPS,)
    rel = np.abs(ours - ref) / np.abs(ref)
    worst = int(rel.argmax())
    assert rel.max() <= 1e-9, f"step {worst}: fastnn {ours[worst]!r} vs NumPy {ref[worst]!r}"
    assert ref[-1] < 0.01 * ref[0]             # it did learn
    np.testing.assert_allclose(model[0].weight.data, rw1.T, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(model[2].weight.data, rw2.T, rtol=1e-7, atol=1e-9)


def test_two_layer_net_float32_tracks_float64(data):
    x, y, w1, w2 = data
    ref, _, _ = two_layer_train(x, y, w1, w2, 300, lr=LR)
    ours, _ = fastnn_two_layer(x, y, w1, w2, steps=300, dtype=np.float32)
    np.testing.assert_allclose(ours, ref, rtol=2e-3)
