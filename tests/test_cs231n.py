"""The CS231n two-layer network (the lecture's "train a 2-layer net in 20 lines of NumPy"),
trained with fastnn from the same initial weights: the loss matches the NumPy version at
every one of 2000 steps."""
import numpy as np
import pytest

import fastnn as fnn

N, D_IN, H, D_OUT = 64, 1000, 100, 10
STEPS = 2000
LR = 1e-4


def numpy_two_layer(x, y, w1, w2, steps=STEPS):
    """The 20-line NumPy network, verbatim: sigmoid hidden layer, no biases, sum of squared
    errors, plain SGD.  Returns the loss at every step."""
    w1, w2 = w1.copy(), w2.copy()
    losses = []
    for _ in range(steps):
        h = 1 / (1 + np.exp(-x.dot(w1)))
        y_pred = h.dot(w2)
        loss = np.square(y_pred - y).sum()
        losses.append(loss)
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_w1 = x.T.dot(grad_h * h * (1 - h))
        w1 -= LR * grad_w1
        w2 -= LR * grad_w2
    return np.array(losses), w1, w2


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
    ref, rw1, rw2 = numpy_two_layer(x, y, w1, w2)
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
    ref, _, _ = numpy_two_layer(x, y, w1, w2, steps=300)
    ours, _ = fastnn_two_layer(x, y, w1, w2, steps=300, dtype=np.float32)
    np.testing.assert_allclose(ours, ref, rtol=2e-3)
