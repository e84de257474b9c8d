"""Trainer, History and callbacks: learning the CS231n spiral, the compiled epoch equals the
module path (compiled=False) and a step-by-step replay, seeded shuffling, partial batches,
EarlyStopping, custom callbacks, non-finite losses, predict / evaluate, input validation,
History.plot and the progress bar."""
import io
import math
import re
import sys
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn._kernels import step as _ks
from _util import assert_bitwise_equal


# ------------------------------------------------------------------------------ helpers
def spiral(seed=0, N=100, K=3, D=2):
    """CS231n's spiral data set: K arms of N points in D=2 dimensions."""
    rs = np.random.RandomState(seed)
    X = np.zeros((N * K, D))
    y = np.zeros(N * K, dtype=np.int64)
    for j in range(K):
        ix = range(N * j, N * (j + 1))
        r = np.linspace(0.0, 1, N)
        t = np.linspace(j * 4, (j + 1) * 4, N) + rs.randn(N) * 0.2
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return X, y


X_SPIRAL, Y_SPIRAL = spiral()


def net(dtype=np.float32, hidden=100, nin=2, nout=3, seed=0, act=fnn.ReLU):
    return fnn.Sequential(fnn.Linear(nin, hidden, dtype=dtype, rng=seed), act(),
                          fnn.Linear(hidden, nout, dtype=dtype, rng=seed + 100))


def trainer(model=None, loss=None, *, opt=None, lr=0.1, momentum=0.9, **kw):
    model = net() if model is None else model
    loss = fnn.CrossEntropyLoss() if loss is None else loss
    opt = fnn.SGD(model.parameters(), lr=lr, momentum=momentum) if opt is None else opt
    kw.setdefault("progress", False)
    return fnn.Trainer(model, loss, opt, **kw)


def params(model):
    return [p.data.copy() for p in model.parameters()]


def assert_params_equal(a, b, what=""):
    a = params(a) if isinstance(a, fnn.Module) else a
    b = params(b) if isinstance(b, fnn.Module) else b
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert_bitwise_equal(x, y, f"{what} param {i}")


def params_differ(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(params(a), params(b)))


def no_momentum_buffers(opt):
    return all(b is None for b in opt.state_dict()["momentum_buffers"])


def perm_for(n, seed, epoch, shuffle=True):
    p = np.empty(n, np.int64)
    if shuffle:
        _ks.shuffle(p, seed, epoch)
    else:
        p[:] = np.arange(n)
    return p


def replay(model, lf, opt, X, y, bs, epochs, seed=0, shuffle=True, first_epoch=0):
    """The Trainer's epochs step by step through the module code.  Returns the per-epoch
    (loss, accuracy) and, when a loss is not finite, (epoch, step) of the failure (1-based;
    the parameters then hold their values from before that step)."""
    dt = model.dtype
    X = np.ascontiguousarray(X, dtype=dt)
    clf = not isinstance(lf, fnn.MSELoss)
    if not clf:
        y = np.ascontiguousarray(y.reshape(len(X), -1), dtype=dt)
    n = len(X)
    steps = -(-n // bs)
    logs = []
    for e in range(first_epoch, first_epoch + epochs):
        perm = perm_for(n, seed, e, shuffle)
        total, hits = 0.0, 0
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            xb, yb = X[idx], y[idx]
            model.zero_grad()
            opt.zero_grad()
            out = model(xb)
            loss = lf(out, yb)
            if not math.isfinite(loss):
                return logs, (e + 1, s + 1)
            if clf:
                hits += int(np.count_nonzero(out.argmax(axis=1) == yb))
            model.backward(lf.backward(), input_grad=False)
            opt.step()
            total += loss * len(idx) if lf.reduction == "mean" else loss
        logs.append((total / n, hits / n if clf else None))
    return logs, None


class Recorder(fnn.Callback):
    """Records every hook call, the logs and the parameters at each epoch's end."""

    def __init__(self):
        self.calls, self.epochs, self.logs, self.states = [], [], [], {}

    def on_train_begin(self, trainer):
        self.calls.append("begin")

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(epoch)
        self.epochs.append(epoch)
        self.logs.append(dict(logs))
        self.states[epoch] = trainer.model.state_dict()
        assert trainer.epoch == epoch

    def on_train_end(self, trainer):
        self.calls.append("end")


# ----------------------------------------------------------------------- learning: spiral
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "module"])
def test_spiral_reaches_97_percent(compiled, dtype):
    model = net(dtype)
    tr = trainer(model, lr=0.1, momentum=0.9, batch_size=32, epochs=150, seed=0,
                 compiled=compiled)
    h = tr.fit(X_SPIRAL, Y_SPIRAL)
    ev = tr.evaluate(X_SPIRAL, Y_SPIRAL)
    assert ev["accuracy"] >= 0.97, ev
    assert max(h["accuracy"]) >= 0.97
    assert h["loss"][-1] < h["loss"][0] / 5
    assert ev["loss"] < 0.15
    pred = tr.predict(X_SPIRAL).argmax(axis=1)
    assert np.mean(pred == Y_SPIRAL) == ev["accuracy"]


def test_spiral_linear_classifier_cannot(dtype):
    """Sanity check of the data: a linear model stays far below 97 %."""
    model = fnn.Linear(2, 3, dtype=dtype, rng=0)
    tr = trainer(model, lr=0.1, batch_size=32, epochs=60)
    tr.fit(X_SPIRAL, Y_SPIRAL)
    assert tr.evaluate(X_SPIRAL, Y_SPIRAL)["accuracy"] < 0.7


# -------------------------------------------------------------------------------- History
def test_history_keys_lengths_and_epoch_numbering():
    Xv, yv = spiral(seed=1)
    model = net()
    tr = trainer(model, batch_size=50, epochs=3)
    h = tr.fit(X_SPIRAL, Y_SPIRAL, validation_data=(Xv, yv))
    assert h is tr.history and isinstance(h, fnn.History)
    keys = {"loss", "accuracy", "val_loss", "val_accuracy", "time", "samples_per_s", "lr"}
    assert set(h.history) == keys
    assert h.epochs == [1, 2, 3] and len(h) == 3 and tr.epoch == 3
    tr.optimizer.lr = 0.05
    tr.epochs = 2
    h2 = tr.fit(X_SPIRAL, Y_SPIRAL, validation_data=(Xv, yv))
    assert h2 is h
    assert h.epochs == [1, 2, 3, 4, 5] and tr.epoch == 5
    for k in keys:
        assert len(h[k]) == 5, k
        assert all(isinstance(v, float) for v in h[k]), k
    assert h["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05]
    assert all(t >= 0 for t in h["time"]) and all(s > 0 for s in h["samples_per_s"])
    assert all(0 <= a <= 1 for a in h["accuracy"] + h["val_accuracy"])
    # the validation metrics are evaluate() at each epoch's end: the last one is now
    ev = tr.evaluate(Xv, yv)
    assert h["val_accuracy"][-1] == ev["accuracy"]
    assert h["val_loss"][-1] == ev["loss"]
    assert "loss" in h and "nope" not in h
    with pytest.raises(KeyError, match=r"no metric 'nope'.*recorded: \['accuracy'"):
        h["nope"]
    assert repr(h).startswith("History(epochs=5, metrics=['accuracy'")
    # without validation data: no val_* (only for the new epochs: lengths then differ)
    tr2 = trainer(net(), epochs=2)
    assert set(tr2.fit(X_SPIRAL, Y_SPIRAL).history) == keys - {"val_loss", "val_accuracy"}


def test_history_regression_has_no_accuracy():
    X = np.linspace(-1, 1, 40)[:, None]
    tr = trainer(net(nin=1, nout=1, hidden=8), fnn.MSELoss(), lr=0.05, epochs=2)
    h = tr.fit(X, X[:, 0] ** 2, validation_data=(X, X[:, 0] ** 2))
    assert set(h.history) == {"loss", "val_loss", "time", "samples_per_s", "lr"}
    assert set(tr.evaluate(X, X ** 2)) == {"loss"}


# ---------------------------------------------- compiled epochs == module path == replay
CONFIGS = {
    "xent-shuffle": dict(loss=lambda: fnn.CrossEntropyLoss(), shuffle=True, bs=32),
    "xent-sum-noshuffle": dict(loss=lambda: fnn.CrossEntropyLoss("sum"), shuffle=False,
                               bs=64),
    "svm-partial": dict(loss=lambda: fnn.SVMLoss(0.5), shuffle=True, bs=7),
    "xent-one-batch": dict(loss=lambda: fnn.CrossEntropyLoss(), shuffle=True, bs=1000),
    "xent-bs1": dict(loss=lambda: fnn.CrossEntropyLoss(), shuffle=True, bs=1),
}
OPTS = {"plain": dict(lr=0.1), "nesterov-wd": dict(lr=0.05, momentum=0.9, nesterov=True,
                                                    weight_decay=1e-3)}


@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_compiled_trainer_equals_module_trainer_and_replay(cfg, opt, dtype):
    c = CONFIGS[cfg]
    X, y = X_SPIRAL[:250], Y_SPIRAL[:250]          # 250: not a multiple of the batch sizes
    Xv, yv = spiral(seed=3)
    epochs = 1 if c["bs"] == 1 else 4
    runs = []
    for compiled in (True, False):
        model = net(dtype, hidden=24)
        o = fnn.SGD(model.parameters(), **OPTS[opt])
        tr = fnn.Trainer(model, c["loss"](), o, batch_size=c["bs"], epochs=epochs,
                         shuffle=c["shuffle"], seed=11, progress=False, compiled=compiled)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = tr.fit(X, y, validation_data=(Xv, yv))
        runs.append((model, o, h))
    (m1, o1, h1), (m2, o2, h2) = runs
    assert_params_equal(m1, m2, "compiled vs compiled=False")
    for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert h1[k] == h2[k], k
    steps = -(-250 // c["bs"])
    assert o1.steps == o2.steps == epochs * steps
    s1, s2 = o1.state_dict(), o2.state_dict()
    for a, b in zip(s1["momentum_buffers"], s2["momentum_buffers"]):
        assert (a is None) == (b is None)
        if a is not None:
            assert_bitwise_equal(a, b)
    # the step-by-step replay: the same permutations, every batch including the last one
    m3 = net(dtype, hidden=24)
    o3 = fnn.SGD(m3.parameters(), **OPTS[opt])
    logs, fail = replay(m3, c["loss"](), o3, X, y, c["bs"], epochs, seed=11,
                        shuffle=c["shuffle"])
    assert fail is None
    assert_params_equal(m1, m3, "trainer vs replay")
    np.testing.assert_allclose(h1["loss"], [l for l, _ in logs], rtol=1e-12)
    assert h1["accuracy"] == [a for _, a in logs]


def test_shuffle_false_uses_the_data_order():
    """shuffle=False equals training on the data in its order; a reversed data set then
    trains differently."""
    X, y = X_SPIRAL, Y_SPIRAL
    tr = trainer(net(), batch_size=40, epochs=2, shuffle=False)
    tr.fit(X, y)
    ref = net()
    replay(ref, fnn.CrossEntropyLoss(), fnn.SGD(ref.parameters(), lr=0.1, momentum=0.9),
           X, y, 40, 2, shuffle=False)
    assert_params_equal(tr.model, ref)
    tr2 = trainer(net(), batch_size=40, epochs=2, shuffle=False)
    tr2.fit(X[::-1], y[::-1])
    assert params_differ(tr.model, tr2.model)
    tr3 = trainer(net(), batch_size=40, epochs=2, shuffle=True, seed=0)
    tr3.fit(X, y)
    assert params_differ(tr.model, tr3.model)


def test_shuffle_reproducible_from_seed():
    def run(seed, compiled=True):
        tr = trainer(net(hidden=20), batch_size=16, epochs=3, seed=seed, compiled=compiled)
        tr.fit(X_SPIRAL, Y_SPIRAL)
        return tr
    a, b, c, d = run(5), run(5), run(6), run(6, compiled=False)
    assert_params_equal(a.model, b.model, "same seed")
    assert a.history["loss"] == b.history["loss"]
    assert params_differ(a.model, c.model)
    assert a.history["loss"] != c.history["loss"]
    assert_params_equal(c.model, d.model, "compiled vs module, same seed")


def test_epochs_use_different_permutations():
    """Epoch e uses shuffle(seed, e): two fits of 1 epoch equal one fit of 2 epochs, and
    differ from training the first epoch's order twice."""
    one = trainer(net(hidden=20), batch_size=16, epochs=2, seed=3)
    one.fit(X_SPIRAL, Y_SPIRAL)
    two = trainer(net(hidden=20), batch_size=16, epochs=1, seed=3)
    two.fit(X_SPIRAL, Y_SPIRAL)
    two.fit(X_SPIRAL, Y_SPIRAL)
    assert_params_equal(one.model, two.model)
    assert one.history["loss"] == two.history["loss"]
    assert two.history.epochs == [1, 2]
    p0 = perm_for(300, 3, 0)
    ref = net(hidden=20)
    o = fnn.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):       # epoch 0's order twice
        replay(ref, fnn.CrossEntropyLoss(), o, X_SPIRAL[p0], Y_SPIRAL[p0], 16, 1,
               shuffle=False)
    assert params_differ(one.model, ref)


def test_last_partial_batch_is_used():
    X, y = X_SPIRAL[:50], Y_SPIRAL[:50]
    tr = trainer(net(), batch_size=16, epochs=1, shuffle=False, lr=0.5, momentum=0.0)
    tr.fit(X, y)
    assert tr.optimizer.steps == 4
    ref = net()
    o = fnn.SGD(ref.parameters(), lr=0.5)
    replay(ref, fnn.CrossEntropyLoss(), o, X, y, 16, 1, shuffle=False)
    assert_params_equal(tr.model, ref, "with the 2-row batch")
    short = net()
    replay(short, fnn.CrossEntropyLoss(), fnn.SGD(short.parameters(), lr=0.5), X[:48],
           y[:48], 16, 1, shuffle=False)
    assert params_differ(tr.model, short)        # the 2 last rows made a difference


def test_mean_loss_weights_the_partial_batch():
    """The epoch loss is the per-sample mean: batches weighted by their size."""
    X, y = X_SPIRAL[:50], Y_SPIRAL[:50]
    tr = trainer(net(np.float64), batch_size=16, epochs=1, shuffle=False, lr=0.0,
                 momentum=0.0)
    h = tr.fit(X, y)
    full = fnn.CrossEntropyLoss()(tr.model(X), y)    # lr=0: the model never changed
    assert h["loss"][0] == pytest.approx(full, rel=1e-13)
    tr_sum = trainer(net(np.float64), fnn.CrossEntropyLoss("sum"), batch_size=16, epochs=1,
                     shuffle=False, lr=0.0, momentum=0.0)
    assert tr_sum.fit(X, y)["loss"][0] == pytest.approx(full, rel=1e-13)


def test_epochs_zero_does_nothing():
    model = net()
    before = params(model)
    rec = Recorder()
    tr = trainer(model, epochs=0)
    h = tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[rec])
    assert len(h) == 0 and h.history == {} and tr.epoch == 0
    assert tr.optimizer.steps == 0
    assert no_momentum_buffers(tr.optimizer)
    assert_params_equal(before, model)
    assert rec.calls == ["begin", "end"]


def test_model_mode_restored_after_fit():
    model = net()
    model.eval()
    trainer(model, epochs=1).fit(X_SPIRAL, Y_SPIRAL)
    assert model.training is False
    model.train()
    trainer(model, epochs=1).fit(X_SPIRAL, Y_SPIRAL)
    assert model.training is True


def test_trainer_follows_model_dtype_change_and_new_optimizer():
    """model.to() between fits re-plans the compiled step; a new optimizer is picked up."""
    res = []
    for compiled in (True, False):
        model = net(hidden=16)
        tr = trainer(model, batch_size=32, epochs=2, compiled=compiled)
        tr.fit(X_SPIRAL, Y_SPIRAL)
        model.to(np.float64)
        tr.optimizer = fnn.SGD(model.parameters(), lr=0.05, momentum=0.5)
        tr.fit(X_SPIRAL, Y_SPIRAL)
        assert all(p.dtype == np.float64 for p in model.parameters())
        assert tr.optimizer.steps == 20
        res.append((model, tr.history["loss"]))
    assert_params_equal(res[0][0], res[1][0])
    assert res[0][1] == res[1][1]


def test_trainer_with_a_model_that_does_not_compile():
    """The module path behind the Trainer: one RuntimeWarning, same results as
    compiled=False."""
    def build():
        return fnn.Sequential(fnn.Linear(2, 20, rng=0), fnn.LeakyReLU(-0.1),
                              fnn.Linear(20, 3, rng=1))
    a = trainer(build(), batch_size=32, epochs=2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a.fit(X_SPIRAL, Y_SPIRAL)
        a.fit(X_SPIRAL, Y_SPIRAL)
    assert [x.category for x in w] == [RuntimeWarning], [str(x.message) for x in w]
    assert "does not fuse" in str(w[0].message)
    b = trainer(build(), batch_size=32, epochs=2, compiled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b.fit(X_SPIRAL, Y_SPIRAL)
        b.fit(X_SPIRAL, Y_SPIRAL)
    assert_params_equal(a.model, b.model)
    assert a.history["loss"] == b.history["loss"]
    assert a.history["accuracy"] == b.history["accuracy"]


class ChangeAtEpoch(fnn.Callback):
    """Changes the model or the optimizer at the end of epochs 1 and 2 (mid-fit)."""

    def __init__(self, what):
        self.what = what

    def on_epoch_end(self, trainer, epoch, logs):
        m, o = trainer.model, trainer.optimizer
        if self.what == "lr-schedule":
            o.lr = o.lr * 0.5
            o.momentum = 0.0 if epoch == 1 else 0.9
        elif self.what == "activation" and epoch == 1:
            setattr(m, "1", fnn.Tanh())
        elif self.what == "linear" and epoch == 1:      # not in the optimizer: falls back
            setattr(m, "2", fnn.Linear(20, 3, rng=9))
        elif self.what == "dtype" and epoch == 2:
            m.to(np.float32)


@pytest.mark.parametrize("what", ["lr-schedule", "activation", "linear"])
def test_model_or_optimizer_changed_by_a_callback_mid_fit(what):
    runs = []
    for compiled in (True, False):
        tr = trainer(net(hidden=20), batch_size=32, epochs=4, compiled=compiled)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[ChangeAtEpoch(what)])
        runs.append((tr, [str(x.message) for x in w]))
    (a, wa), (b, wb) = runs
    assert wb == []
    if what == "linear":
        assert len(wa) == 1 and "not a parameter of the model" in wa[0]
    else:
        assert wa == []
    assert_params_equal(a.model, b.model)
    for k in ("loss", "accuracy", "lr"):
        assert a.history[k] == b.history[k], k
    if what == "lr-schedule":
        assert a.history["lr"] == [0.1, 0.05, 0.025, 0.0125]


def test_model_dtype_changed_by_a_callback_mid_fit():
    outcome = []
    for compiled in (True, False):
        tr = trainer(net(np.float64, hidden=20), batch_size=32, epochs=4, compiled=compiled)
        try:
            tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[ChangeAtEpoch("dtype")])
        except Exception as e:                          # noqa: BLE001
            outcome.append(type(e))
        else:
            outcome.append(params(tr.model))
    a, b = outcome
    if isinstance(b, type):
        assert a is b, (a, b)
    else:
        assert not isinstance(a, type), a
        assert_params_equal(a, b)


# ------------------------------------------------------------------------- EarlyStopping
def expected_early_stop(values, patience, min_delta, mode, first_epoch=1):
    """EarlyStopping's rule replayed on a metric's history: (best, best_epoch, stopped)."""
    best = best_epoch = stopped = None
    wait = 0
    for i, v in enumerate(values):
        e = first_epoch + i
        better = best is None or (v < best - min_delta if mode == "min"
                                  else v > best + min_delta)
        if better:
            best, best_epoch, wait = v, e, 0
        else:
            wait += 1
            if wait >= patience:
                stopped = e
                break
    return best, best_epoch, stopped


@pytest.mark.parametrize("monitor,mode,patience,min_delta", [
    ("val_loss", "auto", 3, 0.0),
    ("val_loss", "min", 2, 0.02),
    ("val_accuracy", "auto", 2, 0.0),
    ("val_accuracy", "max", 0, 0.0),
    ("loss", "max", 2, 0.0),          # training loss "must grow": stops early for sure
])
@pytest.mark.parametrize("restore", [True, False], ids=["restore", "norestore"])
def test_early_stopping(monitor, mode, patience, min_delta, restore):
    Xv, yv = spiral(seed=7, N=15)           # a small noisy validation set
    rec = Recorder()
    es = fnn.EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta,
                           mode=mode, restore_best_weights=restore)
    assert es.mode == ({"auto": "max" if "acc" in monitor else "min"}.get(mode, mode))
    tr = trainer(net(hidden=30), lr=0.3, momentum=0.9, batch_size=16, epochs=40, seed=2)
    h = tr.fit(X_SPIRAL, Y_SPIRAL, validation_data=(Xv, yv), callbacks=[rec, es])
    best, best_epoch, stopped = expected_early_stop(h[monitor], patience, min_delta,
                                                    es.mode)
    assert stopped is not None, "this configuration must stop early"
    assert es.stopped_epoch == stopped == len(h) == tr.epoch < 40
    assert es.best == best and es.best_epoch == best_epoch
    assert rec.calls[-1] == "end" and rec.epochs == h.epochs
    final = rec.states[stopped]
    want = rec.states[best_epoch] if restore else final
    got = tr.model.state_dict()
    assert list(got) == list(want)
    for k in got:
        assert_bitwise_equal(got[k], want[k], k)
    if restore and best_epoch != stopped:
        assert any(not np.array_equal(got[k], final[k]) for k in got)


def test_early_stopping_min_delta_and_patience_zero():
    """With a huge min_delta nothing after the first epoch counts as better."""
    Xv, yv = spiral(seed=7, N=15)
    rec = Recorder()
    es = fnn.EarlyStopping(monitor="val_loss", patience=2, min_delta=1e9)
    tr = trainer(net(hidden=30), epochs=20)
    tr.fit(X_SPIRAL, Y_SPIRAL, validation_data=(Xv, yv), callbacks=[rec, es])
    assert (es.best_epoch, es.stopped_epoch, tr.epoch) == (1, 3, 3)
    assert_params_equal(list(rec.states[1].values()), tr.model)
    es0 = fnn.EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9)
    tr.fit(X_SPIRAL, Y_SPIRAL, validation_data=(Xv, yv), callbacks=[es0])
    # a second fit: numbering continues, the callback's state starts anew
    assert (es0.best_epoch, es0.stopped_epoch, tr.epoch) == (4, 5, 5)


def test_early_stopping_runs_to_the_end_and_resets():
    es = fnn.EarlyStopping(monitor="loss", patience=100)
    tr = trainer(net(hidden=20), epochs=4)
    tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[es])
    assert es.stopped_epoch is None and tr.epoch == 4
    assert es.best == min(tr.history["loss"])
    assert es.best_epoch == 1 + int(np.argmin(tr.history["loss"]))
    tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[es])
    assert es.stopped_epoch is None and tr.epoch == 8
    assert es.best == min(tr.history["loss"][4:])
    assert 5 <= es.best_epoch <= 8


def test_early_stopping_unknown_metric():
    model = net(hidden=10)
    tr = trainer(model, epochs=5)
    es = fnn.EarlyStopping()               # val_loss, without validation data
    with pytest.raises(KeyError) as info:
        tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[es])
    msg = str(info.value)
    assert "'val_loss'" in msg and "'accuracy'" in msg and "'loss'" in msg
    assert "validation_data" in msg
    assert tr.epoch == 1 and model.training is True
    with pytest.raises(KeyError, match="'f1'"):
        tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[fnn.EarlyStopping(monitor="f1")])


@pytest.mark.parametrize("kw", [dict(mode="minimum"), dict(patience=-1), dict(patience=1.5),
                                dict(patience=True), dict(min_delta=-0.1),
                                dict(min_delta=float("nan"))])
def test_early_stopping_bad_arguments(kw):
    with pytest.raises(ValueError, match="EarlyStopping: " + list(kw)[0]):
        fnn.EarlyStopping(**kw)


# ------------------------------------------------------------------------------ callbacks
def test_custom_callback_stops_training():
    class StopAt(fnn.Callback):
        def __init__(self, at):
            self.at, self.seen = at, []

        def on_epoch_end(self, trainer, epoch, logs):
            self.seen.append((epoch, sorted(logs)))
            if epoch == self.at:
                trainer.stop_training = True

    cb, rec = StopAt(3), Recorder()
    tr = trainer(net(hidden=10), epochs=10)
    h = tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[cb, rec])
    assert len(h) == 3 and tr.epoch == 3 and tr.optimizer.steps == 3 * 5
    assert [e for e, _ in cb.seen] == [1, 2, 3]
    assert cb.seen[0][1] == ["accuracy", "loss", "lr", "samples_per_s", "time"]
    assert rec.calls == ["begin", 1, 2, 3, "end"]
    assert rec.logs[-1]["loss"] == h["loss"][-1]
    # the flag is reset by the next fit, which runs its epochs (3 is past)
    tr.epochs = 2
    tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[cb])
    assert tr.epoch == 5 and h.epochs == [1, 2, 3, 4, 5]


def test_callbacks_must_be_callbacks():
    tr = trainer(net(hidden=10), epochs=1)
    with pytest.raises(TypeError, match="Callback instances, got function"):
        tr.fit(X_SPIRAL, Y_SPIRAL, callbacks=[lambda *a: None])
    assert tr.epoch == 0


# ---------------------------------------------------------------------- non-finite losses
def _fake_tty():
    class TTY(io.StringIO):
        def isatty(self):
            return True
    return TTY()


MODES = ["compiled", "module", "compiled-progress"]


def _with_mode(mode, monkeypatch):
    if mode == "compiled-progress":          # the chunked run_batches path with a bar
        monkeypatch.setattr(sys, "stderr", _fake_tty())
    return dict(compiled=mode != "module", progress=mode == "compiled-progress")


@pytest.mark.parametrize("mode", MODES)
def test_nan_in_data_raises_with_epoch_and_step(mode, monkeypatch):
    kw = _with_mode(mode, monkeypatch)
    bs, k = 32, 123
    Xn = X_SPIRAL.copy()
    Xn[k, 1] = np.nan
    model = net(hidden=20)
    rec = Recorder()
    tr = trainer(model, batch_size=bs, epochs=3, seed=4, **kw)
    tr.epochs = 1
    tr.fit(X_SPIRAL, Y_SPIRAL)                       # epoch 1 is clean
    tr.epochs = 3
    step = int(np.flatnonzero(perm_for(300, 4, 1) == k)[0]) // bs + 1
    with pytest.raises(FloatingPointError,
                       match=rf"became nan at epoch 2, step {step} of 10;"):
        tr.fit(Xn, Y_SPIRAL, callbacks=[rec])
    assert rec.calls == ["begin", "end"]
    assert tr.epoch == 1 and len(tr.history) == 1 and model.training is True
    assert tr.optimizer.steps == 10 + step - 1
    ref = net(hidden=20)
    o = fnn.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    replay(ref, fnn.CrossEntropyLoss(), o, X_SPIRAL, Y_SPIRAL, bs, 1, seed=4)
    logs, fail = replay(ref, fnn.CrossEntropyLoss(), o, Xn, Y_SPIRAL, bs, 1, seed=4,
                        first_epoch=1)
    assert fail == (2, step)
    assert_params_equal(model, ref, "before the failing step")
    sd, rsd = tr.optimizer.state_dict(), o.state_dict()
    for a, b in zip(sd["momentum_buffers"], rsd["momentum_buffers"]):
        assert_bitwise_equal(a, b)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dt,lr", [(np.float32, 1e25), (np.float64, 1e200)],
                         ids=["float32", "float64"])
def test_diverging_learning_rate_raises(dt, lr, mode, monkeypatch):
    kw = _with_mode(mode, monkeypatch)
    model = net(dt, hidden=20)
    tr = trainer(model, lr=lr, momentum=0.9, batch_size=32, epochs=5, seed=1, **kw)
    ref = net(dt, hidden=20)
    o = fnn.SGD(ref.parameters(), lr=lr, momentum=0.9)
    with np.errstate(all="ignore"):
        logs, fail = replay(ref, fnn.CrossEntropyLoss(), o, X_SPIRAL, Y_SPIRAL, 32, 5,
                            seed=1)
        assert fail is not None, "the replay must diverge"
        e, s = fail
        with pytest.raises(FloatingPointError,
                           match=rf"loss became (nan|inf) at epoch {e}, step {s} of 10;"
                                 r".*parameters hold their values from the step before"):
            tr.fit(X_SPIRAL, Y_SPIRAL)
    assert_params_equal(model, ref, "before the failing step")
    assert tr.epoch == e - 1 and tr.optimizer.steps == o.steps


def test_nan_at_the_first_step_leaves_no_momentum_buffers():
    Xn = X_SPIRAL.copy()
    Xn[0] = np.nan
    res = []
    for compiled in (True, False):
        tr = trainer(net(hidden=20), batch_size=32, epochs=1, shuffle=False,
                     compiled=compiled)
        with pytest.raises(FloatingPointError, match="epoch 1, step 1 of 10"):
            tr.fit(Xn, Y_SPIRAL)
        res.append(tr)
        assert tr.optimizer.steps == 0
    a, b = res
    assert no_momentum_buffers(b.optimizer)
    assert no_momentum_buffers(a.optimizer)
    for tr in res:
        tr.fit(X_SPIRAL, Y_SPIRAL)
    assert_params_equal(a.model, b.model)


# ------------------------------------------------------------------- predict / evaluate
@pytest.mark.parametrize("n", [7, 300, 2500])          # 2500: several inference batches
def test_predict_runs_in_eval_mode(n, dtype, rng):
    model = net(dtype, hidden=30)
    tr = trainer(model, batch_size=64, epochs=2)
    tr.fit(X_SPIRAL, Y_SPIRAL)
    X = rng.standard_normal((n, 2))                   # float64 in, converted
    for was in (True, False):
        model.train(was)
        out = tr.predict(X)
        assert model.training is was
    expect = model.eval()(X.astype(dtype))
    assert out.dtype == np.dtype(dtype) and out.shape == (n, 3)
    assert_bitwise_equal(out, expect)
    assert_bitwise_equal(tr.predict(X.astype(np.int64)), model(X.astype(np.int64)
                                                              .astype(dtype)))


@pytest.mark.parametrize("loss", ["xent", "xent-sum", "svm", "mse"])
def test_evaluate_matches_manual(loss, rng):
    lf = {"xent": fnn.CrossEntropyLoss(), "xent-sum": fnn.CrossEntropyLoss("sum"),
          "svm": fnn.SVMLoss(0.7), "mse": fnn.MSELoss()}[loss]
    model = net(np.float64, hidden=30)
    tr = trainer(model, lf, lr=0.01, batch_size=32, epochs=1)
    X = X_SPIRAL
    y = Y_SPIRAL if loss != "mse" else rng.standard_normal((300, 3))
    tr.fit(X, y)
    model.train()
    ev = tr.evaluate(X, y)
    assert model.training is True
    out = model.eval()(X)
    model.train()
    manual = type(lf)(**({"margin": 0.7} if loss == "svm" else {}),
                      reduction=lf.reduction)(out, y)
    if lf.reduction == "sum":
        manual /= len(X)
    assert ev["loss"] == pytest.approx(manual, rel=1e-13)
    if loss == "mse":
        assert set(ev) == {"loss"}
    else:
        assert ev["accuracy"] == np.mean(out.argmax(axis=1) == y)
    # more rows than one inference batch
    Xb = np.tile(X, (5, 1))
    yb = np.tile(y, 5) if loss != "mse" else np.tile(y, (5, 1))
    ev2 = tr.evaluate(Xb, yb)
    assert ev2["loss"] == pytest.approx(ev["loss"], rel=1e-12)
    if loss != "mse":
        assert ev2["accuracy"] == ev["accuracy"]


# ------------------------------------------------------------------------ MSE regression
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "module"])
def test_mse_regression_with_1d_targets(compiled, dtype):
    X = np.linspace(-2, 2, 201)[:, None]
    y = np.sin(X[:, 0])
    res = []
    for targets in (y, y[:, None], y.astype(np.float32)):
        model = net(dtype, nin=1, nout=1, hidden=32, act=fnn.Tanh)
        tr = trainer(model, fnn.MSELoss(), lr=0.05, momentum=0.9, batch_size=16, epochs=60,
                     compiled=compiled)
        h = tr.fit(X, targets)
        res.append((model, h))
    (m, h), (m2, h2), (m3, _) = res
    assert "accuracy" not in h
    assert h["loss"][-1] < 0.02 * h["loss"][0] and h["loss"][-1] < 0.01
    assert_params_equal(m, m2, "1-D vs (n, 1) targets")
    if np.dtype(dtype) == np.float32:
        assert_params_equal(m, m3, "float64 vs float32 targets on a float32 model")
    assert h["loss"] == h2["loss"]
    pred = trainer(m, fnn.MSELoss()).predict(X)
    assert pred.shape == (201, 1)
    assert np.max(np.abs(pred[:, 0] - y)) < 0.3


def test_mse_compiled_equals_module_trainer():
    X = np.linspace(-2, 2, 101)[:, None]
    y = np.c_[np.sin(X[:, 0]), np.cos(X[:, 0])]
    models = []
    for compiled in (True, False):
        model = net(np.float64, nin=1, nout=2, hidden=16, act=fnn.Sigmoid)
        tr = trainer(model, fnn.MSELoss("sum"), lr=0.001, momentum=0.9, batch_size=10,
                     epochs=5, compiled=compiled)
        tr.fit(X, y, validation_data=(X[::3], y[::3]))
        models.append((model, tr.history))
    assert_params_equal(models[0][0], models[1][0])
    assert models[0][1]["loss"] == models[1][1]["loss"]
    assert models[0][1]["val_loss"] == models[1][1]["val_loss"]


# ---------------------------------------------------------------------- input validation
def _bad_fit_cases():
    X, y = X_SPIRAL[:10], Y_SPIRAL[:10]
    return {
        "X-1d": ((X[:, 0], y), TypeError, "X must be a 2-D numpy.ndarray (samples, features), "
                                          "got 1-D"),
        "X-3d": ((X[:, :, None], y), TypeError, "got 3-D"),
        "X-list": ((X.tolist(), y), TypeError, "got list"),
        "X-strings": ((X.astype(str), y), TypeError, "X must be numeric, got dtype <U"),
        "X-empty": ((X[:0], y[:0]), ValueError, "X has no samples"),
        "y-missing": ((X, None), TypeError, "y is required"),
        "y-list": ((X, y.tolist()), TypeError, "y must be a numpy.ndarray, got list"),
        "lengths": ((X, y[:9]), ValueError, "X has 10 samples but y has 9"),
        "label-range": ((X, np.r_[y[:5], 3, y[6:]]), ValueError,
                        "labels must be in [0, 3) for the model's 3 outputs; y[5] = 3"),
        "label-negative": ((X, np.r_[y[:7], -2, y[8:]]), ValueError, "y[7] = -2"),
        "label-float": ((X, y.astype(float)), TypeError, "integer class labels of shape "
                                                         "(10,), got dtype float64"),
        "label-2d": ((X, y[:, None]), TypeError, "shape (10, 1)"),
    }


@pytest.mark.parametrize("case", list(_bad_fit_cases()))
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "module"])
def test_fit_input_validation(case, compiled):
    (X, y), exc, text = _bad_fit_cases()[case]
    model = net(hidden=10)
    before = params(model)
    tr = trainer(model, epochs=2, compiled=compiled)
    with pytest.raises(exc) as info:
        tr.fit(X, y)
    assert text in str(info.value) and str(info.value).startswith("Trainer.fit")
    assert_params_equal(before, model)
    assert tr.epoch == 0 and len(tr.history) == 0 and tr.optimizer.steps == 0


def test_fit_validation_data_errors():
    tr = trainer(net(hidden=10), epochs=1)
    X, y = X_SPIRAL, Y_SPIRAL
    for bad in ((X, y, y), X, [X]):
        with pytest.raises(TypeError, match=r"validation_data must be a tuple \(X_val, y_val\)"):
            tr.fit(X, y, validation_data=bad)
    with pytest.raises(ValueError, match=r"Trainer.fit\(validation_data\): labels must be in "
                                         r"\[0, 3\).*y\[1\] = 5"):
        tr.fit(X, y, validation_data=(X[:3], np.array([0, 5, 1])))
    assert tr.epoch == 0


def test_mse_target_validation():
    tr = trainer(net(nin=2, nout=2, hidden=10), fnn.MSELoss(), epochs=1)
    X = X_SPIRAL[:10]
    with pytest.raises(ValueError, match=r"targets must have shape \(10, 2\) \(the model's "
                                         r"output\), got \(10,\)"):
        tr.fit(X, np.zeros(10))
    with pytest.raises(ValueError, match=r"got \(10, 3\)"):
        tr.fit(X, np.zeros((10, 3)))
    with pytest.raises(TypeError, match="targets must be numeric"):
        tr.fit(X, np.zeros((10, 2), dtype=object))
    tr.fit(X, np.zeros((10, 2), dtype=np.int32))       # numeric: converted


@pytest.mark.parametrize("kw,text", [
    (dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
    (dict(batch_size=-3), "batch_size must be an int >= 1"),
    (dict(batch_size=1.5), "batch_size must be an int >= 1, got 1.5"),
    (dict(batch_size=True), "batch_size must be an int >= 1, got True"),
    (dict(batch_size="8"), "batch_size must be an int >= 1, got '8'"),
    (dict(epochs=-1), "epochs must be an int >= 0, got -1"),
    (dict(epochs=2.0), "epochs must be an int >= 0, got 2.0"),
    (dict(seed=-1), "seed must be an int in [0, 2**64), got -1"),
    (dict(seed=0.5), "seed must be an int in [0, 2**64)"),
    (dict(seed=False), "seed must be an int in [0, 2**64)"),
])
def test_trainer_bad_arguments(kw, text):
    m = net(hidden=4)
    with pytest.raises(ValueError, match="Trainer: " + re.escape(text)):
        fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.1), **kw)


def test_trainer_bad_model_and_loss():
    m = net(hidden=4)
    o = fnn.SGD(m.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="Trainer: model must be a fastnn Module, got str"):
        fnn.Trainer("model", fnn.CrossEntropyLoss(), o)
    with pytest.raises(TypeError, match="Trainer: loss_fn must be a fastnn Loss, got function"):
        fnn.Trainer(m, lambda a, b: 0.0, o)
    # numpy integers are fine
    tr = fnn.Trainer(m, fnn.CrossEntropyLoss(), o, batch_size=np.int64(8),
                     epochs=np.int32(1), seed=np.uint8(3), progress=False)
    assert (tr.batch_size, tr.epochs, tr.seed) == (8, 1, 3)
    tr.fit(X_SPIRAL, Y_SPIRAL)


def test_predict_and_evaluate_validation():
    tr = trainer(net(hidden=4), epochs=1)
    with pytest.raises(TypeError, match="Trainer.predict: X must be a 2-D"):
        tr.predict(X_SPIRAL[:, 0])
    with pytest.raises(ValueError, match="Trainer.predict: X has no samples"):
        tr.predict(X_SPIRAL[:0])
    with pytest.raises(ValueError, match=r"Trainer.evaluate: labels must be in \[0, 3\)"):
        tr.evaluate(X_SPIRAL[:2], np.array([0, 3]))
    with pytest.raises(ValueError, match="Trainer.evaluate: X has 2 samples but y has 1"):
        tr.evaluate(X_SPIRAL[:2], np.array([0]))


def test_fit_wrong_number_of_features_compiled():
    tr = trainer(net(hidden=10), epochs=1)
    before = params(tr.model)
    with pytest.raises(ValueError, match="features"):
        tr.fit(np.c_[X_SPIRAL, X_SPIRAL[:, :1]], Y_SPIRAL)    # 3 features, model takes 2
    assert_params_equal(before, tr.model)


def test_fit_wrong_number_of_features_module_path():
    tr = trainer(net(hidden=10), epochs=1, compiled=False)
    with pytest.raises(ValueError, match="X has 3 features but the model's first Linear "
                                         "expects 2"):
        tr.fit(np.c_[X_SPIRAL, X_SPIRAL[:, :1]], Y_SPIRAL)


def test_huge_seed_rejected_or_usable():
    m = net(hidden=4)
    try:
        tr = fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.1),
                         seed=2**64, epochs=1, progress=False)
    except ValueError:
        return
    tr.fit(X_SPIRAL, Y_SPIRAL)


def test_zero_dim_labels_clear_error():
    tr = trainer(net(hidden=4), epochs=1)
    with pytest.raises((TypeError, ValueError), match="Trainer.fit"):
        tr.fit(X_SPIRAL[:1], np.array(1))


# ------------------------------------------------------------------------ History.plot
def test_history_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    Xv, yv = spiral(seed=1, N=20)
    tr = trainer(net(hidden=10), epochs=3)
    tr.fit(X_SPIRAL, Y_SPIRAL, validation_data=(Xv, yv))
    for name, metrics in (("both.png", None), ("loss.png", ("loss",)),
                          ("some.png", ("accuracy", "f1"))):
        path = tmp_path / name
        assert tr.history.plot(str(path), metrics=metrics) == str(path)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match=r"none of \('f1',\) was recorded; recorded: "
                                         r"\['accuracy'"):
        tr.history.plot(str(tmp_path / "x.png"), metrics=("f1",))
    with pytest.raises(ValueError, match="nothing recorded yet"):
        fnn.History().plot(str(tmp_path / "empty.png"))
    with pytest.raises(ValueError, match="nothing recorded yet"):
        trainer(net(hidden=4)).history.plot(str(tmp_path / "empty.png"))
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "x.png").exists()


def test_history_plot_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for mod in ("matplotlib.pyplot", "matplotlib.figure", "matplotlib.backends",
                "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    h = fnn.History()
    with pytest.raises(ImportError, match=r'History.plot needs matplotlib: pip install '
                                          r'"fastnn\[plot\]"'):
        h.plot(str(tmp_path / "a.png"))


# ----------------------------------------------------------------------------- progress
def test_progress_bar_off_when_stderr_is_not_a_terminal(capfd):
    tr = trainer(net(hidden=10), epochs=2, progress=True)
    assert tr.progress is True
    tr.fit(X_SPIRAL, Y_SPIRAL)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_bar_on_a_terminal_same_results(monkeypatch):
    """With a (fake) terminal the bar is drawn and the epoch runs in chunks; the results
    are bitwise those without a bar."""
    fake = _fake_tty()
    monkeypatch.setattr(sys, "stderr", fake)
    a = trainer(net(hidden=20), batch_size=8, epochs=3, progress=True)
    a.fit(X_SPIRAL, Y_SPIRAL)
    text = fake.getvalue()
    assert "epoch 1" in text and "epoch 3" in text and "loss=" in text
    b = trainer(net(hidden=20), batch_size=8, epochs=3, progress=False)
    b.fit(X_SPIRAL, Y_SPIRAL)
    assert_params_equal(a.model, b.model)
    assert a.history["loss"] == b.history["loss"]
    assert a.history["accuracy"] == b.history["accuracy"]
    c = trainer(net(hidden=20), batch_size=8, epochs=3, progress=True, compiled=False)
    c.fit(X_SPIRAL, Y_SPIRAL)
    assert_params_equal(a.model, c.model)
