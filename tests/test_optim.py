"""SGD: the update rule against the reference (PyTorch's torch.optim.SGD), thread-count
determinism, validation, zero_grad, hyperparameter changes and state_dict round trips."""
import itertools

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as ref
from _util import assert_bitwise_equal, uniform

SHAPES = [(7, 5), (5,), (3, 4, 2), (1, 1)]


def _options():
    """Every valid combination of the option grid."""
    out = []
    for mom, damp, wd, nest, maxi in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 0.01),
                                                        (False, True), (False, True)):
        if nest and (mom == 0 or damp != 0):
            continue
        out.append(dict(momentum=mom, dampening=damp, weight_decay=wd, nesterov=nest,
                        maximize=maxi))
    return out


OPTIONS = _options()
OPTION_IDS = ["mom{momentum}-damp{dampening}-wd{weight_decay}"
              "{n}{m}".format(n="-nesterov" if o["nesterov"] else "",
                              m="-maximize" if o["maximize"] else "", **o) for o in OPTIONS]


def _tol(dtype):
    return (1e-12, 1e-14) if np.dtype(dtype) == np.float64 else (1e-6, 1e-6)


def _params(rng, dtype, shapes=SHAPES):
    return [fnn.Parameter(uniform(rng, s, dtype)) for s in shapes]


# ---------------------------------------------------------------- the update rule
@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_sgd_matches_reference(opts, dtype, rng):
    lr = 0.1
    params = _params(rng, dtype)
    expected = [p.data.copy() for p in params]
    bufs = [None] * len(params)
    opt = fnn.SGD(params, lr=lr, **opts)
    rtol, atol = _tol(dtype)
    for step in range(5):
        grads = [uniform(rng, p.shape, dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            expected[i], bufs[i] = ref.sgd_step(expected[i], g, bufs[i], lr, **opts)
            assert p.data.dtype == np.dtype(dtype)
            np.testing.assert_allclose(p.data, expected[i], rtol=rtol, atol=atol,
                                       err_msg=f"step {step}, param {i}")
        # the momentum buffers agree with the reference too
        state = opt.state_dict()
        for i, b in enumerate(state["momentum_buffers"]):
            if opts["momentum"] == 0:
                assert b is None
            else:
                assert b.shape == params[i].shape and b.dtype == np.dtype(dtype)
                np.testing.assert_allclose(b, bufs[i], rtol=rtol, atol=atol,
                                           err_msg=f"buffer, step {step}, param {i}")
    assert opt.steps == 5


def test_sgd_gradients_from_backward(dtype, rng):
    """The gradients a backward pass leaves in p.grad are what step() uses."""
    model = fnn.Sequential(fnn.Linear(6, 8, dtype=dtype, rng=1), fnn.Tanh(),
                           fnn.Linear(8, 3, dtype=dtype, rng=2))
    opt = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    x = uniform(rng, (10, 6), dtype)
    t = uniform(rng, (10, 3), dtype)
    loss = fnn.MSELoss()
    expected = [p.data.copy() for p in model.parameters()]
    bufs = [None] * len(expected)
    rtol, atol = _tol(dtype)
    for _ in range(3):
        opt.zero_grad()
        loss(model(x), t)
        model.backward(loss.backward())
        grads = [p.grad.copy() for p in model.parameters()]
        opt.step()
        for i, (p, g) in enumerate(zip(model.parameters(), grads)):
            expected[i], bufs[i] = ref.sgd_step(expected[i], g, bufs[i], 0.05, momentum=0.9,
                                                weight_decay=0.01)
            np.testing.assert_allclose(p.data, expected[i], rtol=rtol, atol=atol)


def test_sgd_mixed_dtypes(rng):
    params = [fnn.Parameter(uniform(rng, (4, 3), np.float32)),
              fnn.Parameter(uniform(rng, (4, 3), np.float64))]
    opt = fnn.SGD(params, lr=0.2, momentum=0.5)
    expected = [p.data.copy() for p in params]
    bufs = [None, None]
    for _ in range(3):
        for p in params:
            p.grad = uniform(rng, p.shape, p.dtype)
        grads = [p.grad.copy() for p in params]
        opt.step()
        for i, p in enumerate(params):
            expected[i], bufs[i] = ref.sgd_step(expected[i], grads[i], bufs[i], 0.2, 0.5)
            rtol, atol = _tol(p.dtype)
            np.testing.assert_allclose(p.data, expected[i], rtol=rtol, atol=atol)
            assert p.data.dtype == expected[i].dtype


def test_lr_zero_leaves_params(rng):
    p = fnn.Parameter(rng.standard_normal((3, 3)))
    before = p.data.copy()
    opt = fnn.SGD([p], lr=0.0, momentum=0.9, weight_decay=0.1)
    p.grad = rng.standard_normal((3, 3))
    opt.step()
    assert_bitwise_equal(p.data, before)


def test_step_keeps_arrays(rng):
    """step() updates p.data in place: views held elsewhere see the new values."""
    p = fnn.Parameter(rng.standard_normal((3, 4)))
    data, grad = p.data, p.grad
    opt = fnn.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones((3, 4))
    opt.step()
    assert p.data is data and p.grad is grad
    np.testing.assert_allclose(grad, 1.0)     # the gradient is not consumed


# ---------------------------------------------------------------- threads
@pytest.mark.parametrize("opts", [dict(), dict(momentum=0.9, weight_decay=0.01),
                                  dict(momentum=0.9, nesterov=True, maximize=True)],
                         ids=["plain", "momentum-wd", "nesterov-maximize"])
def test_thread_count_does_not_change_results(opts, dtype, native, threads, rng):
    shape = (300, 1000)
    init = uniform(rng, shape, dtype)
    grads = [uniform(rng, shape, dtype) for _ in range(3)]
    results = []
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        p = fnn.Parameter(init)
        small = fnn.Parameter(init[:3, :5])        # below the parallel threshold
        opt = fnn.SGD([p, small], lr=0.1, **opts)
        for g in grads:
            p.grad = g
            small.grad = g[:3, :5]
            opt.step()
        results.append((p.data.copy(), small.data.copy(), opt.state_dict()))
    (p1, s1, st1), (p2, s2, st2) = results
    assert_bitwise_equal(p2, p1, "large parameter")
    assert_bitwise_equal(s2, s1, "small parameter")
    for b1, b2 in zip(st1["momentum_buffers"], st2["momentum_buffers"]):
        assert (b1 is None) == (b2 is None)
        if b1 is not None:
            assert_bitwise_equal(b2, b1, "momentum buffer")
    # and the threaded result is the reference's
    expected, buf = init, None
    for g in grads:
        expected, buf = ref.sgd_step(expected, g, buf, 0.1, **opts)
    rtol, atol = _tol(dtype)
    np.testing.assert_allclose(p2, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- validation
def _p():
    return fnn.Parameter(np.zeros((2, 2)))


@pytest.mark.parametrize("kw", [dict(lr=-0.1), dict(lr=float("nan")), dict(lr=float("inf")),
                                dict(lr=0.1, momentum=-0.5), dict(lr=0.1, weight_decay=-1e-4),
                                dict(lr=0.1, dampening=-0.1),
                                dict(lr=0.1, momentum=float("nan")),
                                dict(lr=0.1, weight_decay=float("inf"))],
                         ids=["lr<0", "lr-nan", "lr-inf", "momentum<0", "wd<0", "damp<0",
                              "momentum-nan", "wd-inf"])
def test_bad_hyperparameters(kw):
    with pytest.raises(ValueError, match="SGD"):
        fnn.SGD([_p()], **kw)


@pytest.mark.parametrize("kw", [dict(lr="0.1"), dict(lr=None), dict(lr=True),
                                dict(lr=0.1, momentum="0.9")],
                         ids=["lr-str", "lr-None", "lr-bool", "momentum-str"])
def test_non_numeric_hyperparameters(kw):
    with pytest.raises(TypeError, match="SGD"):
        fnn.SGD([_p()], **kw)


@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9, dampening=0.1),
                                dict(momentum=0.0, dampening=0.1)],
                         ids=["no-momentum", "dampening", "both"])
def test_nesterov_requirements(kw):
    with pytest.raises(ValueError, match="nesterov"):
        fnn.SGD([_p()], lr=0.1, nesterov=True, **kw)


def test_nesterov_requirements_on_attribute_change():
    opt = fnn.SGD([_p()], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        opt.nesterov = True
    assert opt.nesterov is False
    opt = fnn.SGD([_p()], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        opt.momentum = 0.0
    with pytest.raises(ValueError, match="nesterov"):
        opt.dampening = 0.5
    assert opt.momentum == 0.9 and opt.dampening == 0.0 and opt.nesterov is True
    with pytest.raises(ValueError, match="SGD"):
        opt.lr = -1.0
    with pytest.raises(ValueError, match="SGD"):
        opt.weight_decay = float("nan")
    assert opt.lr == 0.1 and opt.weight_decay == 0.0


def test_empty_params():
    with pytest.raises(ValueError, match="SGD"):
        fnn.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="SGD"):
        fnn.SGD(iter(()), lr=0.1)
    with pytest.raises(ValueError, match="SGD"):
        fnn.SGD(fnn.Sequential(fnn.ReLU()).parameters(), lr=0.1)


def test_module_instead_of_parameters():
    model = fnn.Sequential(fnn.Linear(3, 2))
    with pytest.raises(TypeError, match="parameters()"):
        fnn.SGD(model, lr=0.1)
    with pytest.raises(TypeError, match="SGD"):
        fnn.SGD(fnn.Linear(3, 2), lr=0.1)


def test_single_parameter_rejected():
    with pytest.raises(TypeError, match="SGD"):
        fnn.SGD(_p(), lr=0.1)


def test_duplicate_parameter():
    p, q = _p(), _p()
    with pytest.raises(ValueError, match=r"params\[2\]"):
        fnn.SGD([p, q, p], lr=0.1)


@pytest.mark.parametrize("bad", [np.zeros((2, 2)), 1.0, None, "w"],
                         ids=["ndarray", "float", "None", "str"])
def test_non_parameter_element(bad):
    with pytest.raises(TypeError, match=r"params\[1\]"):
        fnn.SGD([_p(), bad], lr=0.1)


def test_non_iterable_params():
    with pytest.raises(TypeError, match="SGD"):
        fnn.SGD(3, lr=0.1)


# ---------------------------------------------------------------- zero_grad and lr changes
def test_zero_grad(rng):
    model = fnn.Sequential(fnn.Linear(4, 5, rng=0), fnn.ReLU(), fnn.Linear(5, 2, rng=1))
    x = rng.standard_normal((6, 4)).astype(np.float32)
    model(x)
    model.backward(np.ones((6, 2), np.float32))
    params = list(model.parameters())
    assert all(np.any(p.grad != 0) for p in params)
    opt = fnn.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    for p in params:
        assert p.grad.shape == p.shape
        assert not np.any(p.grad)
    # a backward after zero_grad starts from zero (does not add to the old gradient)
    model(x)
    model.backward(np.ones((6, 2), np.float32))
    g1 = [p.grad.copy() for p in params]
    opt.zero_grad()
    model(x)
    model.backward(np.ones((6, 2), np.float32))
    for p, g in zip(params, g1):
        assert_bitwise_equal(p.grad, g)


def test_changing_lr_takes_effect(dtype, rng):
    p = fnn.Parameter(uniform(rng, (5, 3), dtype))
    opt = fnn.SGD([p], lr=0.1, momentum=0.9)
    expected, buf = p.data.copy(), None
    rtol, atol = _tol(dtype)
    for lr in (0.1, 0.5, 0.5, 0.01, 0.0):
        opt.lr = lr
        assert opt.lr == lr
        g = uniform(rng, p.shape, dtype)
        p.grad = g
        opt.step()
        expected, buf = ref.sgd_step(expected, g, buf, lr, momentum=0.9)
        np.testing.assert_allclose(p.data, expected, rtol=rtol, atol=atol)


def test_changing_other_hyperparameters_takes_effect(rng):
    p = fnn.Parameter(rng.standard_normal((4, 4)))
    opt = fnn.SGD([p], lr=0.1)
    expected, buf = p.data.copy(), None
    schedule = [dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False),
                dict(momentum=0.9, dampening=0.0, weight_decay=0.05, nesterov=False,
                     maximize=False),
                dict(momentum=0.9, dampening=0.0, weight_decay=0.05, nesterov=True,
                     maximize=True),
                dict(momentum=0.5, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False)]
    for opts in schedule:
        opt.nesterov = False
        for k in ("momentum", "dampening", "weight_decay", "maximize", "nesterov"):
            setattr(opt, k, opts[k])
        g = rng.standard_normal((4, 4))
        p.grad = g
        opt.step()
        expected, buf = ref.sgd_step(expected, g, buf, 0.1, **opts)
        if opts["momentum"] == 0:
            buf = None
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- state_dict
def _model(dtype, seed=0):
    return fnn.Sequential(fnn.Linear(6, 9, dtype=dtype, rng=seed), fnn.Sigmoid(),
                          fnn.Linear(9, 4, dtype=dtype, rng=seed + 1), fnn.LeakyReLU(0.2),
                          fnn.Linear(4, 3, bias=False, dtype=dtype, rng=seed + 2))


def _train(model, opt, x, t, steps):
    loss = fnn.MSELoss()
    values = []
    for _ in range(steps):
        opt.zero_grad()
        values.append(loss(model(x), t))
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    return values


@pytest.mark.parametrize("opts", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                  dict(momentum=0.8, dampening=0.2, weight_decay=0.01,
                                       maximize=False), dict()],
                         ids=["momentum", "nesterov", "dampening-wd", "plain"])
def test_state_dict_round_trip(opts, dtype, rng):
    x = uniform(rng, (12, 6), dtype)
    t = uniform(rng, (12, 3), dtype)
    model = _model(dtype)
    opt = fnn.SGD(model.parameters(), lr=0.05, **opts)
    _train(model, opt, x, t, 3)
    state = opt.state_dict()
    assert state["steps"] == 3 and state["lr"] == 0.05
    for k, v in opts.items():
        assert state[k] == v

    copy = _model(dtype, seed=10)
    copy.load_state_dict(model.state_dict())
    fresh = fnn.SGD(copy.parameters(), lr=1.0, momentum=0.1, dampening=0.5)
    fresh.load_state_dict(state)
    assert fresh.lr == 0.05 and fresh.steps == 3
    assert repr(fresh) == repr(opt)
    # the loaded state is a copy: changing the dict afterwards changes nothing
    for b in state["momentum_buffers"]:
        if b is not None:
            b[...] = 1e6
    state["lr"] = 99.0

    a = _train(model, opt, x, t, 3)
    b = _train(copy, fresh, x, t, 3)
    assert a == b
    for (n, p), q in zip(model.named_parameters(), copy.parameters()):
        assert_bitwise_equal(q.data, p.data, n)
    for b1, b2 in zip(opt.state_dict()["momentum_buffers"],
                      fresh.state_dict()["momentum_buffers"]):
        assert (b1 is None) == (b2 is None)
        if b1 is not None:
            assert_bitwise_equal(b2, b1)


def test_state_dict_is_a_copy(rng):
    p = fnn.Parameter(rng.standard_normal((3, 2)))
    opt = fnn.SGD([p], lr=0.1, momentum=0.9)
    assert opt.state_dict()["momentum_buffers"] == [None]
    p.grad = np.ones((3, 2))
    opt.step()
    state = opt.state_dict()
    buf = state["momentum_buffers"][0]
    assert buf.shape == (3, 2)
    np.testing.assert_array_equal(buf, 1.0)
    buf[...] = 123.0
    np.testing.assert_array_equal(opt.state_dict()["momentum_buffers"][0], 1.0)


def test_state_dict_before_any_step_loads(rng):
    params = _params(rng, np.float64)
    opt = fnn.SGD(params, lr=0.3, momentum=0.9, nesterov=True)
    other = fnn.SGD(params, lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.state_dict()["momentum_buffers"] == [None] * len(params)
    assert other.nesterov and other.momentum == 0.9 and other.lr == 0.3


def _state_snapshot(opt):
    s = opt.state_dict()
    bufs = s.pop("momentum_buffers")
    return s, [None if b is None else b.copy() for b in bufs]


def _assert_same_state(opt, snapshot):
    s, bufs = _state_snapshot(opt)
    assert s == snapshot[0]
    for b1, b2 in zip(bufs, snapshot[1]):
        assert (b1 is None) == (b2 is None)
        if b1 is not None:
            assert_bitwise_equal(b1, b2)


def _stepped_opt(rng):
    params = [fnn.Parameter(rng.standard_normal((4, 3))), fnn.Parameter(rng.standard_normal(3))]
    opt = fnn.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = rng.standard_normal(p.shape)
    opt.step()
    return opt


def test_load_state_dict_wrong_buffer_shape_leaves_state(rng):
    opt = _stepped_opt(rng)
    before = _state_snapshot(opt)
    bad = opt.state_dict()
    bad["lr"] = 0.5                              # would change, if anything were applied
    bad["momentum"] = 0.1
    bad["steps"] = 100
    bad["momentum_buffers"][0] = np.zeros((3, 4))    # transposed shape
    with pytest.raises(ValueError, match="momentum buffer 0"):
        opt.load_state_dict(bad)
    _assert_same_state(opt, before)
    bad["momentum_buffers"][0] = np.zeros(12)        # same size, wrong shape
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    _assert_same_state(opt, before)
    bad["momentum_buffers"][0] = np.zeros((4, 3), np.float32)   # wrong dtype
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    _assert_same_state(opt, before)
    bad["momentum_buffers"] = bad["momentum_buffers"][:1]       # too few buffers
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    _assert_same_state(opt, before)


def test_load_state_dict_bad_hyperparameters_leave_state(rng):
    opt = _stepped_opt(rng)
    before = _state_snapshot(opt)
    for key, value in (("lr", -1.0), ("momentum", float("nan"))):
        bad = opt.state_dict()
        bad[key] = value
        bad["steps"] = 7
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
        _assert_same_state(opt, before)
    bad = opt.state_dict()
    bad.update(momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        opt.load_state_dict(bad)
    _assert_same_state(opt, before)


def test_load_state_dict_keys(rng):
    opt = _stepped_opt(rng)
    before = _state_snapshot(opt)
    for key in ("lr", "momentum_buffers", "steps"):
        bad = opt.state_dict()
        del bad[key]
        with pytest.raises(KeyError, match=key):
            opt.load_state_dict(bad)
        _assert_same_state(opt, before)
    bad = opt.state_dict()
    bad["betas"] = (0.9, 0.999)
    with pytest.raises(KeyError, match="betas"):
        opt.load_state_dict(bad)
    _assert_same_state(opt, before)
    with pytest.raises(TypeError):
        opt.load_state_dict([("lr", 0.1)])


# ---------------------------------------------------------------- parameters without gradient
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_decay_applies_without_gradient(momentum, dtype, rng):
    """Documented difference from PyTorch: a parameter with no gradient since zero_grad()
    is still updated (its gradient counts as zero, weight decay and momentum apply)."""
    used = fnn.Linear(3, 2, dtype=dtype, rng=0)
    unused = fnn.Linear(3, 2, dtype=dtype, rng=1)
    opt = fnn.SGD(list(used.parameters()) + list(unused.parameters()), lr=0.1,
                  momentum=momentum, weight_decay=0.01)
    x = uniform(rng, (4, 3), dtype)
    w0 = unused.weight.data.copy()
    b0 = unused.bias.data.copy()
    expected_w, buf_w = w0, None
    expected_b, buf_b = b0, None
    # a stale, non-zero gradient left from an earlier backward must not be used
    unused(x)
    unused.backward(np.ones((4, 2), dtype))
    for _ in range(3):
        opt.zero_grad()
        used(x)
        used.backward(np.ones((4, 2), dtype))
        opt.step()
        zero = np.zeros_like(w0)
        expected_w, buf_w = ref.sgd_step(expected_w, zero, buf_w, 0.1, momentum=momentum,
                                         weight_decay=0.01)
        expected_b, buf_b = ref.sgd_step(expected_b, np.zeros_like(b0), buf_b, 0.1,
                                         momentum=momentum, weight_decay=0.01)
    rtol, atol = _tol(dtype)
    assert not np.array_equal(unused.weight.data, w0)
    np.testing.assert_allclose(unused.weight.data, expected_w, rtol=rtol, atol=atol)
    np.testing.assert_allclose(unused.bias.data, expected_b, rtol=rtol, atol=atol)
    np.testing.assert_allclose(unused.weight.data, w0 * (1 - 0.1 * 0.01) ** 3
                               if momentum == 0 else expected_w, rtol=rtol, atol=atol)
    assert not np.any(unused.weight.grad)


def test_fresh_parameter_without_gradient(rng):
    p = fnn.Parameter(rng.standard_normal((2, 3)))
    before = p.data.copy()
    opt = fnn.SGD([p], lr=0.5, weight_decay=0.1)
    opt.step()
    np.testing.assert_allclose(p.data, before * (1 - 0.05), rtol=1e-12)
    plain = fnn.SGD([p], lr=0.5)
    after = p.data.copy()
    plain.zero_grad()
    plain.step()
    assert_bitwise_equal(p.data, after)          # zero gradient, no decay: unchanged


# The update runs in the kernel table (one vectorized loop per flag combination and ISA
# variant): every variant against the reference, on sizes around the vector widths.
@pytest.mark.parametrize("opts", [dict(), dict(weight_decay=0.01),
                                  dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
                                  dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                                  dict(momentum=0.5, maximize=True)],
                         ids=["plain", "wd", "mom", "damp", "nesterov-wd", "maximize"])
def test_sgd_every_kernel_variant(opts, variant, dtype, rng):
    shapes = [(1,), (7,), (16,), (17,), (3, 33), (8200,)]    # 8200: two work chunks
    params = _params(rng, dtype, shapes)
    expected = [p.data.copy() for p in params]
    bufs = [None] * len(params)
    opt = fnn.SGD(params, lr=0.1, **opts)
    rtol, atol = _tol(dtype)
    for step in range(3):
        grads = [uniform(rng, p.shape, dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            expected[i], bufs[i] = ref.sgd_step(expected[i], g, bufs[i], 0.1, **opts)
            np.testing.assert_allclose(p.data, expected[i], rtol=rtol, atol=atol,
                                       err_msg=f"{variant}: step {step}, param {i}")


def test_sgd_flushes_subnormals_only(dtype):
    """FTZ/DAZ during the update: a momentum buffer decaying into the subnormal range
    becomes exactly 0 (instead of ~100-cycle assists per value); normal values follow the
    reference; the process's own floating-point mode is untouched afterwards."""
    tiny = np.finfo(dtype).tiny
    p = fnn.Parameter(np.array([1.0, 1.0, 1.0], dtype))
    opt = fnn.SGD([p], lr=0.0, momentum=0.5)
    p.grad = np.array([tiny * 4, 1.0, 0.0], dtype)     # normal values
    opt.step()
    buf = opt._bufs[0]
    assert buf[0] == tiny * 4 and buf[1] == 1.0
    p.grad = np.zeros(3, dtype)
    opt.step()                                          # 0.5 * 4 tiny = 2 tiny: normal
    assert buf[0] == tiny * 2
    opt.step()
    assert buf[0] == tiny                               # still normal
    opt.step()                                          # 0.5 * tiny: subnormal -> 0
    assert buf[0] == 0.0 and buf[1] == 0.125
    # numpy (same thread) still computes subnormals: the mode was restored
    assert np.array([tiny], dtype)[0] / 2 > 0
