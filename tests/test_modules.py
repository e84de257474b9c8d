"""The module layer (fastnn.modules): Parameter, the Module API, Linear, the activations
and Sequential -- against the NumPy reference, fused vs unfused bitwise, buffer reuse,
thread independence and error messages."""
import re
from collections import OrderedDict

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as ref
from _util import assert_bitwise_equal, assert_close, uniform

# (factory, reference name, negative slope)
ACTS = [
    (fnn.Sigmoid, "sigmoid", 0.01),
    (fnn.ReLU, "relu", 0.01),
    (fnn.Tanh, "tanh", 0.01),
    (lambda: fnn.LeakyReLU(0.01), "leaky_relu", 0.01),
    (lambda: fnn.LeakyReLU(0.2), "leaky_relu", 0.2),
]
ACT_IDS = ["sigmoid", "relu", "tanh", "leaky0.01", "leaky0.2"]
# every activation module, including the unfusable ones
ALL_ACTS = ACTS + [(lambda: fnn.LeakyReLU(-0.3), "leaky_relu", -0.3),
                   (fnn.Identity, "identity", 0.01)]
ALL_ACT_IDS = ACT_IDS + ["leaky-0.3", "identity"]


def _expected_act_grad(g, x, y, name, slope):
    """grad_out * act'(x); for LeakyReLU the derivative comes from the INPUT's sign (with a
    negative slope the output's sign does not tell the two branches apart)."""
    if name == "leaky_relu":
        d = np.where(x.astype(np.float64) > 0, 1.0, slope)
        return (g.astype(np.float64) * d).astype(g.dtype)
    return ref.activation_grad(g, y, name, slope)


def _small_model(dtype=np.float32, seed=0):
    return fnn.Sequential(fnn.Linear(4, 5, dtype=dtype, rng=seed), fnn.ReLU(),
                          fnn.Linear(5, 3, dtype=dtype, rng=seed + 1))


def _params_snapshot(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def _assert_params_equal(model, snapshot):
    for n, p in model.named_parameters():
        assert_bitwise_equal(p.data, snapshot[n], n)


# ========================================================================== Parameter
class TestParameter:
    def test_data_is_c_contiguous_copy(self, dtype, rng):
        a = np.asfortranarray(uniform(rng, (4, 3), dtype))
        p = fnn.Parameter(a)
        assert isinstance(p.data, np.ndarray)
        assert p.data.flags.c_contiguous
        assert p.data.dtype == dtype and p.shape == (4, 3) and p.dtype == dtype
        assert not np.shares_memory(p.data, a)
        np.testing.assert_array_equal(p.data, a)
        a[0, 0] = 123
        assert p.data[0, 0] != 123

    def test_noncontiguous_source(self, rng):
        a = rng.standard_normal((6, 8))[::-2, 1::3]
        p = fnn.Parameter(a)
        assert p.data.flags.c_contiguous
        np.testing.assert_array_equal(p.data, a)

    def test_grad_zero_initially_same_shape_dtype(self, dtype, rng):
        p = fnn.Parameter(uniform(rng, (3, 5), dtype))
        g = p.grad
        assert isinstance(g, np.ndarray)
        assert g.shape == (3, 5) and g.dtype == dtype
        assert not np.any(g)

    def test_zero_grad(self, dtype, rng):
        p = fnn.Parameter(uniform(rng, 7, dtype))
        p.grad = np.ones(7, dtype)
        assert np.all(p.grad == 1)
        p.zero_grad()
        assert not np.any(p.grad)
        assert p.grad.shape == (7,)

    def test_data_setter_copies_into_same_array(self, dtype, rng):
        p = fnn.Parameter(uniform(rng, (2, 3), dtype))
        arr = p.data
        new = uniform(rng, (2, 3), dtype)
        p.data = new
        assert p.data is arr
        np.testing.assert_array_equal(p.data, new)
        assert not np.shares_memory(p.data, new)
        # a non-contiguous (and overlapping: reversed own data) source
        expect = arr[::-1].copy()
        p.data = p.data[::-1]
        assert p.data is arr
        np.testing.assert_array_equal(p.data, expect)

    def test_data_setter_rejects_wrong_shape_and_dtype(self, rng):
        p = fnn.Parameter(rng.standard_normal((2, 3)))
        before = p.data.copy()
        with pytest.raises(ValueError, match=r"\(3, 2\)"):
            p.data = np.zeros((3, 2))
        with pytest.raises(ValueError):
            p.data = np.zeros(6)
        with pytest.raises(TypeError):
            p.data = np.zeros((2, 3), np.int64)
        with pytest.raises(TypeError):
            p.data = np.zeros((2, 3), np.complex128)
        np.testing.assert_array_equal(p.data, before)

    def test_grad_setter_copies_into_same_array(self, dtype, rng):
        p = fnn.Parameter(uniform(rng, (4,), dtype))
        g = p.grad
        new = uniform(rng, (4,), dtype)
        p.grad = new
        assert p.grad is g
        np.testing.assert_array_equal(p.grad, new)
        assert not np.shares_memory(p.grad, new)
        with pytest.raises(ValueError):
            p.grad = np.zeros(5, dtype)
        np.testing.assert_array_equal(p.grad, new)
        p.zero_grad()
        assert p.grad is g and not np.any(g)
        p.grad = new
        p.grad = None           # None: zero
        assert p.grad is g and not np.any(g)

    @pytest.mark.parametrize("bad", [np.int32, np.int64, np.complex64, np.complex128,
                                     np.float16, np.bool_])
    def test_rejects_non_float_data(self, bad):
        with pytest.raises(TypeError, match="float32 or float64"):
            fnn.Parameter(np.zeros((2, 2), bad))

    def test_rejects_python_ints(self):
        with pytest.raises(TypeError):
            fnn.Parameter([[1, 2], [3, 4]])


# ======================================================================== Module API
class TestModuleAPI:
    def test_named_parameters(self):
        model = _small_model()
        names = [n for n, _ in model.named_parameters()]
        assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
        params = dict(model.named_parameters())
        assert params["0.weight"] is model[0].weight
        assert params["2.bias"] is model[2].bias
        assert [id(p) for p in model.parameters()] == [id(p) for p in params.values()]
        assert [n for n, _ in model[0].named_parameters()] == ["weight", "bias"]

    def test_shared_linear_yields_parameters_once(self):
        lin = fnn.Linear(4, 4)
        model = fnn.Sequential(lin, fnn.ReLU(), lin)
        ps = list(model.parameters())
        assert len(ps) == 2
        assert ps[0] is lin.weight and ps[1] is lin.bias
        assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]

    def test_children(self):
        model = _small_model()
        kids = list(model.children())
        assert len(kids) == 3
        assert all(k is m for k, m in zip(kids, model))
        assert [n for n, _ in model.named_children()] == ["0", "1", "2"]
        assert list(model[1].children()) == []

    def test_train_eval_recursive(self):
        inner = fnn.Sequential(fnn.Linear(3, 3), fnn.Tanh())
        model = fnn.Sequential(fnn.Linear(4, 3), inner, fnn.ReLU())
        assert model.training and all(m.training for m in model.modules())
        assert model.eval() is model
        assert not model.training
        assert not any(m.training for m in model.modules())
        assert not inner[0].training and not inner[1].training
        assert model.train() is model
        assert all(m.training for m in model.modules())
        assert model.train(False) is model
        assert not any(m.training for m in model.modules())

    def test_zero_grad(self, rng):
        model = _small_model()
        x = rng.standard_normal((2, 4)).astype(np.float32)
        model(x)
        model.backward(np.ones((2, 3), np.float32))
        assert any(np.any(p.grad) for p in model.parameters())
        model.zero_grad()
        for n, p in model.named_parameters():
            assert not np.any(p.grad), n

    def test_state_dict_returns_copies(self):
        model = _small_model()
        snap = _params_snapshot(model)
        sd = model.state_dict()
        assert isinstance(sd, OrderedDict)
        assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        for n, p in model.named_parameters():
            assert not np.shares_memory(sd[n], p.data)
            sd[n][...] = 42
        _assert_params_equal(model, snap)

    def test_load_state_dict_round_trip(self, dtype):
        a = _small_model(dtype, seed=0)
        b = _small_model(dtype, seed=10)
        res = b.load_state_dict(a.state_dict())
        assert tuple(res) == ([], [])
        for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
            assert na == nb
            assert_bitwise_equal(pb.data, pa.data, nb)
        # the parameters' arrays were written in place
        w = b[0].weight.data
        b.load_state_dict(_small_model(dtype, seed=3).state_dict())
        assert b[0].weight.data is w

    def test_load_state_dict_strict_keys(self):
        model = _small_model()
        snap = _params_snapshot(model)
        sd = _small_model(seed=5).state_dict()
        missing = OrderedDict(sd)
        del missing["2.bias"]
        with pytest.raises(KeyError):
            model.load_state_dict(missing)
        extra = OrderedDict(sd)
        extra["3.weight"] = np.zeros((2, 2), np.float32)
        with pytest.raises(KeyError):
            model.load_state_dict(extra)
        with pytest.raises(KeyError):
            model.load_state_dict(extra, strict=True)
        _assert_params_equal(model, snap)

    def test_load_state_dict_non_strict(self):
        model = _small_model()
        snap = _params_snapshot(model)
        sd = _small_model(seed=5).state_dict()
        partial = OrderedDict(sd)
        del partial["2.bias"]
        partial["extra"] = np.zeros(3, np.float32)
        missing, unexpected = model.load_state_dict(partial, strict=False)
        assert list(missing) == ["2.bias"]
        assert list(unexpected) == ["extra"]
        for n in ("0.weight", "0.bias", "2.weight"):
            np.testing.assert_array_equal(dict(model.named_parameters())[n].data, sd[n])
        np.testing.assert_array_equal(model[2].bias.data, snap["2.bias"])

    def test_load_state_dict_wrong_shape_is_atomic(self):
        model = _small_model()
        snap = _params_snapshot(model)
        sd = _small_model(seed=5).state_dict()
        sd["2.bias"] = np.zeros(4, np.float32)          # last entry is bad
        with pytest.raises(ValueError, match="2.bias"):
            model.load_state_dict(sd)
        _assert_params_equal(model, snap)
        with pytest.raises(ValueError):
            model.load_state_dict(sd, strict=False)
        _assert_params_equal(model, snap)

    def test_load_state_dict_wrong_dtype_is_atomic(self):
        model = _small_model()
        snap = _params_snapshot(model)
        sd = _small_model(seed=5).state_dict()
        sd["2.bias"] = sd["2.bias"].astype(np.float64)  # last entry is bad
        with pytest.raises(TypeError, match="2.bias"):
            model.load_state_dict(sd)
        _assert_params_equal(model, snap)

    def test_repr(self):
        model = _small_model()
        r = repr(model)
        assert r.startswith("Sequential(")
        assert "Linear(in_features=4, out_features=5, bias=True)" in r
        assert "(1): ReLU()" in r
        assert "(2): Linear(in_features=5, out_features=3, bias=True)" in r
        assert repr(fnn.Linear(2, 3, bias=False)) == \
            "Linear(in_features=2, out_features=3, bias=False)"
        assert "negative_slope=0.2" in repr(fnn.LeakyReLU(0.2))

    def test_to_double_float(self, rng):
        model = _small_model()
        assert model.dtype == np.float32
        x32 = rng.standard_normal((3, 4)).astype(np.float32)
        x64 = x32.astype(np.float64)
        out32 = model(x32).copy()

        assert model.to(np.float64) is model
        assert model.dtype == np.float64
        assert all(p.dtype == np.float64 and p.grad.dtype == np.float64
                   for p in model.parameters())
        out64 = model(x64)
        assert out64.dtype == np.float64
        np.testing.assert_allclose(out64, out32, rtol=1e-5, atol=1e-6)
        with pytest.raises(TypeError, match="float32"):
            model(x32)
        model.backward(np.ones((3, 3)))
        assert model[0].weight.grad.dtype == np.float64

        assert model.float() is model
        assert model.dtype == np.float32
        assert all(p.dtype == np.float32 for p in model.parameters())
        assert model(x32).dtype == np.float32
        with pytest.raises(TypeError, match="float64"):
            model(x64)

        assert model.double() is model
        assert all(p.dtype == np.float64 for p in model.parameters())
        assert model(x64).dtype == np.float64
        assert "dtype=float64" in repr(model)

    @pytest.mark.parametrize("target", [np.float64, np.float32], ids=["convert", "same"])
    def test_to_drops_saved_state(self, target, rng):
        model = _small_model()
        model(rng.standard_normal((2, 4)).astype(np.float32))
        model.to(target)
        with pytest.raises(RuntimeError, match="backward"):
            model.backward(np.ones((2, 3), target))

    def test_to_rejects_non_float(self):
        with pytest.raises(TypeError):
            _small_model().to(np.int32)

    def test_forgotten_super_init(self):
        class Bad(fnn.Module):
            def __init__(self):
                self.lin = fnn.Linear(2, 2)

        with pytest.raises(AttributeError, match=re.escape("super().__init__")):
            Bad()

        class BadParam(fnn.Module):
            def __init__(self):
                self.w = fnn.Parameter(np.zeros(3))

        with pytest.raises(AttributeError, match=re.escape("super().__init__")):
            BadParam()


# ============================================================================ Linear
class TestLinear:
    def test_shapes(self):
        lin = fnn.Linear(7, 3)
        assert lin.in_features == 7 and lin.out_features == 3
        assert lin.weight.shape == (3, 7)
        assert lin.bias.shape == (3,)
        assert isinstance(lin.weight, fnn.Parameter) and isinstance(lin.bias, fnn.Parameter)
        nb = fnn.Linear(7, 3, bias=False)
        assert nb.bias is None
        assert [n for n, _ in nb.named_parameters()] == ["weight"]

    def test_init_bounds_and_std(self, dtype):
        lin = fnn.Linear(400, 300, dtype=dtype, rng=0)
        bound = 1.0 / np.sqrt(400)
        w = lin.weight.data
        b = lin.bias.data
        # compared in the parameter's dtype: rounding may land exactly on the rounded bound
        assert np.all(np.abs(w) <= dtype.type(bound))
        assert np.all(np.abs(b) <= dtype.type(bound))
        np.testing.assert_allclose(w.astype(np.float64).std(), bound / np.sqrt(3), rtol=0.01)
        assert abs(w.astype(np.float64).mean()) < 0.01 * bound
        # the whole range is used
        assert np.abs(w).max() > 0.99 * bound

    def test_rng_reproducible(self):
        a = fnn.Linear(20, 10, rng=123)
        b = fnn.Linear(20, 10, rng=123)
        c = fnn.Linear(20, 10, rng=124)
        assert_bitwise_equal(a.weight.data, b.weight.data)
        assert_bitwise_equal(a.bias.data, b.bias.data)
        assert not np.array_equal(a.weight.data, c.weight.data)
        g1 = fnn.Linear(20, 10, rng=np.random.default_rng(5))
        g2 = fnn.Linear(20, 10, rng=np.random.default_rng(5))
        assert_bitwise_equal(g1.weight.data, g2.weight.data)
        # fresh entropy when rng is None
        assert not np.array_equal(fnn.Linear(20, 10).weight.data,
                                  fnn.Linear(20, 10).weight.data)

    def test_dtypes(self):
        assert fnn.Linear(3, 2).weight.dtype == np.float32
        assert fnn.Linear(3, 2).bias.dtype == np.float32
        l64 = fnn.Linear(3, 2, dtype=np.float64)
        assert l64.weight.dtype == np.float64 and l64.bias.dtype == np.float64
        assert fnn.Linear(3, 2, dtype="float64").dtype == np.float64

    @pytest.mark.parametrize("bad", [np.int32, np.float16, np.complex64, "int64"])
    def test_bad_dtype(self, bad):
        with pytest.raises(TypeError, match="float32 or float64"):
            fnn.Linear(3, 2, dtype=bad)

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True])
    def test_bad_features(self, bad):
        with pytest.raises(ValueError):
            fnn.Linear(bad, 3)
        with pytest.raises(ValueError):
            fnn.Linear(3, bad)

    def test_numpy_int_features(self):
        lin = fnn.Linear(np.int64(3), np.int32(2))
        assert lin.weight.shape == (2, 3)

    @pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
    @pytest.mark.parametrize("shape", [(5, 4, 3), (13, 37, 19), (1, 1, 1), (64, 100, 40)],
                             ids=lambda s: "x".join(map(str, s)))
    def test_forward_backward_vs_reference(self, shape, bias, dtype, engine, rng):
        M, K, N = shape
        lin = fnn.Linear(K, N, bias=bias, dtype=dtype, rng=rng)
        x = uniform(rng, (M, K), dtype)
        g = uniform(rng, (M, N), dtype)
        b = lin.bias.data if bias else None
        y = lin(x)
        assert_close(y, ref.linear_forward(x, lin.weight.data, b), dtype, K)
        gx = lin.backward(g)
        ex, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
        assert_close(gx, ex, dtype, N, err_msg="grad_x")
        assert_close(lin.weight.grad, eW, dtype, M, err_msg="grad_W")
        if bias:
            assert_close(lin.bias.grad, eb, dtype, M, err_msg="grad_b")

    def test_gradients_accumulate(self, dtype, engine, rng):
        lin = fnn.Linear(9, 6, dtype=dtype, rng=rng)
        x = uniform(rng, (5, 9), dtype)
        g = uniform(rng, (5, 6), dtype)
        _, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
        lin(x)
        lin.backward(g)
        lin(x)
        lin.backward(g)
        assert_close(lin.weight.grad, 2 * eW, dtype, 10)
        assert_close(lin.bias.grad, 2 * eb, dtype, 10)
        lin.zero_grad()
        assert not np.any(lin.weight.grad) and not np.any(lin.bias.grad)
        lin(x)
        lin.backward(g)
        assert_close(lin.weight.grad, eW, dtype, 5)
        assert_close(lin.bias.grad, eb, dtype, 5)

    def test_gradient_accumulates_into_grad_set_by_hand(self, rng):
        lin = fnn.Linear(4, 3, dtype=np.float64, rng=rng)
        x = rng.standard_normal((2, 4))
        g = rng.standard_normal((2, 3))
        _, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
        lin.weight.grad = np.ones((3, 4))
        lin.bias.grad = np.full(3, 2.0)
        lin(x)
        lin.backward(g)
        np.testing.assert_allclose(lin.weight.grad, 1 + eW, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lin.bias.grad, 2 + eb, rtol=1e-12, atol=1e-14)

    @pytest.mark.parametrize("which", ["weight", "bias"])
    def test_zero_grad_of_one_parameter_only(self, which, rng):
        lin = fnn.Linear(4, 3, dtype=np.float64, rng=rng)
        x = rng.standard_normal((2, 4))
        g = rng.standard_normal((2, 3))
        _, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
        lin(x)
        lin.backward(g)
        getattr(lin, which).zero_grad()
        lin(x)
        lin.backward(g)
        np.testing.assert_allclose(lin.weight.grad, (1 if which == "weight" else 2) * eW,
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lin.bias.grad, (1 if which == "bias" else 2) * eb,
                                   rtol=1e-12, atol=1e-14)

    @pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
    def test_backward_without_input_grad(self, bias, dtype, engine, rng):
        lin = fnn.Linear(8, 5, bias=bias, dtype=dtype, rng=rng)
        x = uniform(rng, (6, 8), dtype)
        g = uniform(rng, (6, 5), dtype)
        lin(x)
        assert lin.backward(g, input_grad=False) is None
        _, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
        assert_close(lin.weight.grad, eW, dtype, 6)
        if bias:
            assert_close(lin.bias.grad, eb, dtype, 6)

    def test_noncontiguous_inputs(self, dtype, engine, rng):
        M, K, N = 11, 13, 7
        lin = fnn.Linear(K, N, dtype=dtype, rng=rng)
        g = uniform(rng, (M, N), dtype)
        xs = {
            "col_slice": uniform(rng, (M, 2 * K), dtype)[:, ::2],
            "row_col_slice": uniform(rng, (2 * M, 3 * K), dtype)[::2, 1::3],
            "T_of_fortran": np.asfortranarray(uniform(rng, (K, M), dtype)).T,
            "fortran": np.asfortranarray(uniform(rng, (M, K), dtype)),
            "T_of_c": np.ascontiguousarray(uniform(rng, (K, M), dtype)).T,
            "neg_rows": uniform(rng, (M, K), dtype)[::-1],
            "neg_both": uniform(rng, (M, K + 1), dtype)[::-1, :0:-1],
        }
        for name, x in xs.items():
            assert x.shape == (M, K), name
            xc = np.ascontiguousarray(x)
            lin.zero_grad()
            y = lin(x).copy()
            gx = lin.backward(g).copy()
            gW, gb = lin.weight.grad.copy(), lin.bias.grad.copy()
            assert_close(y, ref.linear_forward(x, lin.weight.data, lin.bias.data), dtype, K,
                         err_msg=name)
            ex, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
            assert_close(gx, ex, dtype, N, err_msg=name)
            assert_close(gW, eW, dtype, M, err_msg=name)
            assert_close(gb, eb, dtype, M, err_msg=name)
            # and the same as the contiguous copy
            lin.zero_grad()
            np.testing.assert_allclose(lin(xc), y, rtol=1e-6 if dtype == np.float32 else 1e-13,
                                       atol=1e-6 if dtype == np.float32 else 1e-14,
                                       err_msg=name)
            np.testing.assert_array_equal(x, xc, err_msg=name)   # input untouched

    def test_noncontiguous_grad_out(self, dtype, engine, rng):
        lin = fnn.Linear(6, 5, dtype=dtype, rng=rng)
        x = uniform(rng, (4, 6), dtype)
        for g in (uniform(rng, (8, 5), dtype)[::2], np.asfortranarray(uniform(rng, (4, 5), dtype)),
                  uniform(rng, (4, 5), dtype)[::-1, ::-1]):
            lin.zero_grad()
            lin(x)
            gx = lin.backward(g)
            ex, eW, eb = ref.linear_backward(g, x, lin.weight.data, None)
            assert_close(gx, ex, dtype, 5)
            assert_close(lin.weight.grad, eW, dtype, 4)
            assert_close(lin.bias.grad, eb, dtype, 4)

    def test_empty_batch(self, dtype, engine, rng):
        lin = fnn.Linear(4, 3, dtype=dtype, rng=rng)
        x = uniform(rng, (2, 4), dtype)
        lin(x)
        lin.backward(np.ones((2, 3), dtype))
        acc_W, acc_b = lin.weight.grad.copy(), lin.bias.grad.copy()
        y = lin(np.zeros((0, 4), dtype))
        assert y.shape == (0, 3) and y.dtype == dtype
        gx = lin.backward(np.zeros((0, 3), dtype))
        assert gx.shape == (0, 4)
        assert_bitwise_equal(lin.weight.grad, acc_W)       # accumulating nothing
        assert_bitwise_equal(lin.bias.grad, acc_b)
        lin.zero_grad()
        lin(np.zeros((0, 4), dtype))
        lin.backward(np.zeros((0, 3), dtype))
        assert not np.any(lin.weight.grad) and not np.any(lin.bias.grad)

    def test_broadcast_readonly_unaligned_inputs(self, dtype, engine, rng):
        def unaligned(a):
            buf = np.zeros(a.nbytes + 1, np.uint8)
            v = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
            v[...] = a
            return v

        lin = fnn.Linear(4, 3, dtype=dtype, rng=rng)
        base = uniform(rng, (5, 4), dtype)
        g = uniform(rng, (5, 3), dtype)
        ro = base.copy()
        ro.flags.writeable = False
        xs = {"bcast_rows": np.broadcast_to(base[0], (5, 4)),
              "bcast_all": np.broadcast_to(dtype.type(0.5), (5, 4)),
              "unaligned": unaligned(base), "readonly": ro}
        gs = {"g": g, "g_bcast": np.broadcast_to(dtype.type(1.0), (5, 3)),
              "g_bcast_rows": np.broadcast_to(g[0], (5, 3)), "g_unaligned": unaligned(g)}
        for xn, x in xs.items():
            for gn, gg in gs.items():
                msg = f"{xn}, {gn}"
                lin.zero_grad()
                y = lin(x)
                assert_close(y, ref.linear_forward(x, lin.weight.data, lin.bias.data),
                             dtype, 4, err_msg=msg)
                gx = lin.backward(gg)
                ex, eW, eb = ref.linear_backward(gg, x, lin.weight.data, None)
                assert_close(gx, ex, dtype, 3, err_msg=msg)
                assert_close(lin.weight.grad, eW, dtype, 5, err_msg=msg)
                assert_close(lin.bias.grad, eb, dtype, 5, err_msg=msg)

    def test_eval_forward_matches_training_forward(self, dtype, rng):
        lin = fnn.Linear(6, 4, dtype=dtype, rng=rng)
        x = uniform(rng, (3, 6), dtype)
        y = lin(x).copy()
        lin.eval()
        assert_bitwise_equal(lin(x), y)


# ======================================================================= activations
class TestActivations:
    @pytest.mark.parametrize("act,name,slope", ALL_ACTS, ids=ALL_ACT_IDS)
    def test_forward_backward_vs_reference(self, act, name, slope, dtype, rng):
        m = act()
        x = (3 * rng.standard_normal((17, 23))).astype(dtype)
        x[0, :3] = 0                       # exact zeros too
        g = rng.standard_normal((17, 23)).astype(dtype)
        y = m(x)
        expect = ref.activation(x, name, slope)
        assert_close(y, expect, dtype)
        gi = m.backward(g)
        assert_close(gi, _expected_act_grad(g, x, expect, name, slope), dtype)

    def test_leaky_negative_slope_gradient_uses_input_sign(self, dtype):
        m = fnn.LeakyReLU(-0.5)
        x = np.array([[-2.0, -0.5, 0.5, 2.0]], dtype)
        y = m(x)
        np.testing.assert_array_equal(y, np.array([[1.0, 0.25, 0.5, 2.0]], dtype))
        gi = m.backward(np.ones_like(x))
        np.testing.assert_array_equal(gi, np.array([[-0.5, -0.5, 1.0, 1.0]], dtype))

    @pytest.mark.parametrize("act,name,slope", ALL_ACTS, ids=ALL_ACT_IDS)
    @pytest.mark.parametrize("shape", [(11,), (3, 4, 5), (2, 1, 3, 2)],
                             ids=["1d", "3d", "4d"])
    def test_any_shape(self, act, name, slope, shape, dtype, rng):
        m = act()
        x = (2 * rng.standard_normal(shape)).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        y = m(x)
        assert y.shape == shape and y.dtype == dtype
        expect = ref.activation(x, name, slope)
        assert_close(y, expect, dtype)
        gi = m.backward(g)
        assert gi.shape == shape and gi.dtype == dtype
        assert_close(gi, _expected_act_grad(g, x, expect, name, slope), dtype)

    @pytest.mark.parametrize("act,name,slope", ALL_ACTS, ids=ALL_ACT_IDS)
    def test_noncontiguous_input(self, act, name, slope, dtype, rng):
        m = act()
        for x in (rng.standard_normal((6, 10))[:, ::2], rng.standard_normal((5, 4))[::-1],
                  np.asfortranarray(rng.standard_normal((5, 4))),
                  rng.standard_normal((4, 6, 8))[:, ::2, 1::2]):
            x = x.astype(dtype, copy=False)
            g = rng.standard_normal(x.shape).astype(dtype)
            y = m(x)
            expect = ref.activation(x, name, slope)
            assert_close(y, expect, dtype)
            assert_close(m.backward(g), _expected_act_grad(g, x, expect, name, slope), dtype)

    @pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0,), (2, 0, 4), (2, 4, 0)],
                             ids=["0x3", "3x0", "0", "2x0x4", "2x4x0"])
    def test_empty_input(self, shape, dtype):
        """An activation works on arrays of any shape, empty ones included."""
        for act, name, _ in ALL_ACTS:
            m = act()
            x = np.zeros(shape, dtype)
            y = m(x)
            assert y.shape == shape and y.dtype == dtype, name
            gi = m.backward(np.zeros(shape, dtype))
            assert gi.shape == shape and gi.dtype == dtype, name
            m.eval()
            assert m(x).shape == shape, name

    def test_relu_derivative_at_zero_is_zero(self, dtype):
        m = fnn.ReLU()
        x = np.array([[-1.0, 0.0, -0.0, 1.0]], dtype)
        y = m(x)
        np.testing.assert_array_equal(y, [[0, 0, 0, 1]])
        gi = m.backward(np.full_like(x, 3.0))
        np.testing.assert_array_equal(gi, np.array([[0, 0, 0, 3]], dtype))

    def test_backward_without_input_grad(self, rng):
        m = fnn.Tanh()
        x = rng.standard_normal((3, 4))
        m(x)
        assert m.backward(np.ones_like(x), input_grad=False) is None

    def test_identity_returns_input(self, rng):
        m = fnn.Identity()
        x = rng.standard_normal((3, 4))
        g = rng.standard_normal((3, 4))
        assert m(x) is x
        assert m.backward(g) is g

    def test_leaky_relu_slope_validation(self):
        assert fnn.LeakyReLU().negative_slope == 0.01
        with pytest.raises(TypeError):
            fnn.LeakyReLU("a")
        with pytest.raises(ValueError):
            fnn.LeakyReLU(float("nan"))
        with pytest.raises(ValueError):
            fnn.LeakyReLU(float("inf"))


# ======================================================================== Sequential
def _fusion_model(act, dtype, bias, seed=0, sizes=(37, 45, 29, 7)):
    a, b, c, d = sizes
    return fnn.Sequential(
        fnn.Linear(a, b, bias=bias, dtype=dtype, rng=seed), act(),
        fnn.Linear(b, c, bias=bias, dtype=dtype, rng=seed + 1), act(),
        fnn.Linear(c, d, bias=bias, dtype=dtype, rng=seed + 2))


def _run_fused(model, x, g):
    model.zero_grad()
    out = model(x).copy()
    gx = model.backward(g).copy()
    return out, gx, {n: p.grad.copy() for n, p in model.named_parameters()}


def _run_manual(model, x, g):
    """The same network, one module at a time, through the model's own modules."""
    model.zero_grad()
    h = x
    for i in range(len(model)):
        h = model[i].forward(h)
    out = h.copy()
    for i in reversed(range(len(model))):
        g = model[i].backward(g)
    return out, g.copy(), {n: p.grad.copy() for n, p in model.named_parameters()}


def _assert_runs_bitwise(a, b):
    assert_bitwise_equal(a[0], b[0], "output")
    assert_bitwise_equal(a[1], b[1], "grad input")
    assert list(a[2]) == list(b[2])
    for n in a[2]:
        assert_bitwise_equal(a[2][n], b[2][n], n)


class TestSequentialFusion:
    @pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
    @pytest.mark.parametrize("act,name,slope", ALL_ACTS, ids=ALL_ACT_IDS)
    def test_fused_bitwise_equals_manual_chain(self, act, name, slope, bias, dtype, engine,
                                               rng):
        model = _fusion_model(act, dtype, bias)
        x = (3 * rng.standard_normal((23, 37))).astype(dtype)
        g = rng.standard_normal((23, 7)).astype(dtype)
        manual = _run_manual(model, x, g)
        fused = _run_fused(model, x, g)
        _assert_runs_bitwise(fused, manual)
        # steady state (buffers reused) gives the same again
        _assert_runs_bitwise(_run_fused(model, x, g), manual)
        _assert_runs_bitwise(_run_manual(model, x, g), manual)

    @pytest.mark.parametrize("act,name,slope", ACTS, ids=ACT_IDS)
    def test_sequential_matches_reference(self, act, name, slope, dtype, engine, rng):
        model = _fusion_model(act, dtype, True, sizes=(13, 17, 11, 5))
        x = (2 * rng.standard_normal((9, 13))).astype(dtype)
        g = rng.standard_normal((9, 5)).astype(dtype)
        lins = [model[0], model[2], model[4]]
        acts = [name, name, "identity"]
        hs = [x]
        for lin, a in zip(lins, acts):
            hs.append(ref.linear_forward(hs[-1], lin.weight.data, lin.bias.data, a, slope))
        assert_close(model(x), hs[-1], dtype, k=17, scale=4)
        gx = model.backward(g)
        gg = g
        for i in (2, 1, 0):
            gg, gW, gb = ref.linear_backward(gg, hs[i], lins[i].weight.data, hs[i + 1],
                                             acts[i], slope)
            assert_close(lins[i].weight.grad, gW, dtype, k=9, scale=4, err_msg=f"W{i}")
            assert_close(lins[i].bias.grad, gb, dtype, k=9, scale=4, err_msg=f"b{i}")
        assert_close(gx, gg, dtype, k=17, scale=4)

    def test_mixed_activations_bitwise(self, dtype, engine, rng):
        model = fnn.Sequential(
            fnn.Tanh(), fnn.Linear(10, 12, dtype=dtype, rng=1), fnn.LeakyReLU(-0.3),
            fnn.Linear(12, 9, dtype=dtype, rng=2), fnn.Sigmoid(), fnn.ReLU(),
            fnn.Linear(9, 8, bias=False, dtype=dtype, rng=3), fnn.Identity(),
            fnn.Linear(8, 4, dtype=dtype, rng=4), fnn.LeakyReLU(0.1))
        x = (2 * rng.standard_normal((6, 10))).astype(dtype)
        g = rng.standard_normal((6, 4)).astype(dtype)
        _assert_runs_bitwise(_run_fused(model, x, g), _run_manual(model, x, g))

    def test_reused_linear_and_activation(self, rng):
        """A Linear (and an activation) used twice: each use keeps its own saved state and
        the parameter gradients of both uses add up."""
        lin = fnn.Linear(5, 5, dtype=np.float64, rng=3)
        act = fnn.Tanh()
        model = fnn.Sequential(lin, act, lin, act, lin)
        x = rng.standard_normal((4, 5))
        g = rng.standard_normal((4, 5))
        W, b = lin.weight.data, lin.bias.data
        h1 = ref.linear_forward(x, W, b, "tanh")
        h2 = ref.linear_forward(h1, W, b, "tanh")
        out = ref.linear_forward(h2, W, b)
        np.testing.assert_allclose(model(x), out, rtol=1e-12, atol=1e-14)
        gx = model.backward(g)
        g2, gW2, gb2 = ref.linear_backward(g, h2, W, out)
        g1, gW1, gb1 = ref.linear_backward(g2, h1, W, h2, "tanh")
        g0, gW0, gb0 = ref.linear_backward(g1, x, W, h1, "tanh")
        np.testing.assert_allclose(gx, g0, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lin.weight.grad, gW0 + gW1 + gW2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lin.bias.grad, gb0 + gb1 + gb2, rtol=1e-12, atol=1e-14)

    def test_reused_unfusable_activation(self, rng):
        act = fnn.LeakyReLU(-0.3)
        model = fnn.Sequential(fnn.Linear(5, 6, dtype=np.float64, rng=1), act,
                               fnn.Linear(6, 6, dtype=np.float64, rng=2), act,
                               fnn.Linear(6, 2, dtype=np.float64, rng=3))
        fnn.gradcheck(model, rng.standard_normal((4, 5)))

    def test_gradients_accumulate(self, dtype, engine, rng):
        model = _fusion_model(fnn.Sigmoid, dtype, True, sizes=(6, 5, 4, 3))
        x = rng.standard_normal((3, 6)).astype(dtype)
        g = rng.standard_normal((3, 3)).astype(dtype)
        once = _run_fused(model, x, g)[2]
        model.zero_grad()
        model(x)
        model.backward(g)
        model(x)
        model.backward(g)
        for n, p in model.named_parameters():
            assert_close(p.grad, 2 * once[n], dtype, 6, err_msg=n)
        model.zero_grad()
        assert not any(np.any(p.grad) for p in model.parameters())

    def test_backward_without_input_grad(self, rng):
        model = _fusion_model(fnn.ReLU, np.float64, True, sizes=(6, 5, 4, 3))
        x = rng.standard_normal((3, 6))
        g = rng.standard_normal((3, 3))
        model(x)
        ref_gx = model.backward(g).copy()
        grads = {n: p.grad.copy() for n, p in model.named_parameters()}
        model.zero_grad()
        model(x)
        assert model.backward(g, input_grad=False) is None
        assert ref_gx.shape == x.shape
        for n, p in model.named_parameters():
            assert_bitwise_equal(p.grad, grads[n], n)


class TestSequentialContainer:
    def test_indexing_len_iteration(self):
        mods = [fnn.Linear(4, 5), fnn.ReLU(), fnn.Linear(5, 3), fnn.Tanh()]
        model = fnn.Sequential(*mods)
        assert len(model) == 4
        assert all(a is b for a, b in zip(model, mods))
        assert len(list(model)) == 4
        assert model[0] is mods[0] and model[2] is mods[2]
        assert model[-1] is mods[3] and model[-4] is mods[0]
        with pytest.raises(IndexError):
            model[4]
        with pytest.raises(IndexError):
            model[-5]
        with pytest.raises(TypeError):
            model["0"]

    def test_slice_shares_modules(self, rng):
        model = fnn.Sequential(fnn.Linear(4, 5, rng=0), fnn.ReLU(), fnn.Linear(5, 3, rng=1))
        s = model[1:]
        assert isinstance(s, fnn.Sequential)
        assert len(s) == 2
        assert s[0] is model[1] and s[1] is model[2]
        assert s[1].weight is model[2].weight
        head = model[:1]
        assert isinstance(head, fnn.Sequential) and head[0] is model[0]
        assert len(model[::2]) == 2
        # the slice computes with the same parameters
        x = rng.standard_normal((2, 4)).astype(np.float32)
        h = model[0](x).copy()
        expect = ref.linear_forward(ref.activation(h, "relu"), model[2].weight.data,
                                    model[2].bias.data)
        assert_close(s(h), expect, np.float32, 5)

    def test_append(self, rng):
        model = fnn.Sequential(fnn.Linear(4, 5, dtype=np.float64, rng=0))
        x = rng.standard_normal((3, 4))
        model(x)
        act = fnn.Sigmoid()
        assert model.append(act) is model
        assert len(model) == 2 and model[1] is act
        model.append(fnn.Linear(5, 2, dtype=np.float64, rng=1))
        assert [n for n, _ in model.named_parameters()] == \
            ["0.weight", "0.bias", "2.weight", "2.bias"]
        y = model(x)
        h = ref.linear_forward(x, model[0].weight.data, model[0].bias.data, "sigmoid")
        expect = ref.linear_forward(h, model[2].weight.data, model[2].bias.data)
        np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-14)
        with pytest.raises(TypeError):
            model.append(lambda v: v)

    def test_backward_after_append_needs_new_forward(self, rng):
        model = fnn.Sequential(fnn.Linear(4, 4, rng=0))
        x = rng.standard_normal((3, 4)).astype(np.float32)
        model(x)
        model.append(fnn.ReLU())
        with pytest.raises(RuntimeError):
            model.backward(np.ones((3, 4), np.float32))

    def test_ordered_dict_names(self):
        model = fnn.Sequential(OrderedDict([("fc1", fnn.Linear(4, 5)), ("act", fnn.ReLU()),
                                            ("fc2", fnn.Linear(5, 3))]))
        assert [n for n, _ in model.named_parameters()] == \
            ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
        assert [n for n, _ in model.named_children()] == ["fc1", "act", "fc2"]
        assert list(model.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight",
                                            "fc2.bias"]
        assert "(fc1): Linear(in_features=4" in repr(model)
        assert isinstance(model[1], fnn.ReLU)
        assert model(np.zeros((2, 4), np.float32)).shape == (2, 3)

    @pytest.mark.parametrize("bad", [lambda v: v, 3, np.zeros(3), "ReLU"])
    def test_non_module_element(self, bad):
        with pytest.raises(TypeError):
            fnn.Sequential(fnn.Linear(2, 2), bad)

    def test_nested_sequential_twice_raises(self, rng):
        inner = fnn.Sequential(fnn.Linear(4, 4), fnn.ReLU())
        model = fnn.Sequential(inner, inner)
        with pytest.raises(ValueError, match="twice"):
            model(rng.standard_normal((2, 4)).astype(np.float32))

    def test_nested_sequential(self, dtype, rng):
        inner = fnn.Sequential(fnn.Linear(4, 6, dtype=dtype, rng=0), fnn.Tanh())
        model = fnn.Sequential(inner, fnn.Linear(6, 2, dtype=dtype, rng=1))
        assert [n for n, _ in model.named_parameters()] == \
            ["0.0.weight", "0.0.bias", "1.weight", "1.bias"]
        x = rng.standard_normal((3, 4)).astype(dtype)
        g = rng.standard_normal((3, 2)).astype(dtype)
        flat = fnn.Sequential(inner[0], inner[1], model[1])
        a = _run_fused(model, x, g)
        b = _run_fused(flat, x, g)
        assert_bitwise_equal(a[0], b[0])
        assert_bitwise_equal(a[1], b[1])
        for pa, pb in zip(a[2].values(), b[2].values()):
            assert_bitwise_equal(pa, pb)


# ==================================================================== buffer reuse
def _module_cases():
    return [
        ("linear", lambda dt: fnn.Linear(6, 6, dtype=dt, rng=0), (5, 6), (5, 6)),
        ("sigmoid", lambda dt: fnn.Sigmoid(), (5, 6), (5, 6)),
        ("relu", lambda dt: fnn.ReLU(), (5, 6), (5, 6)),
        ("tanh", lambda dt: fnn.Tanh(), (5, 6), (5, 6)),
        ("leaky0.2", lambda dt: fnn.LeakyReLU(0.2), (5, 6), (5, 6)),
        ("leaky-0.3", lambda dt: fnn.LeakyReLU(-0.3), (5, 6), (5, 6)),
        ("sequential", lambda dt: fnn.Sequential(fnn.Linear(6, 7, dtype=dt, rng=0),
                                                 fnn.ReLU(),
                                                 fnn.Linear(7, 6, dtype=dt, rng=1)),
         (5, 6), (5, 6)),
    ]


CASES = _module_cases()
CASE_IDS = [c[0] for c in CASES]


class TestBuffers:
    @pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
    def test_training_reuses_buffers(self, case, dtype, rng):
        _, make, xshape, yshape = case
        m = make(dtype)
        x = rng.standard_normal(xshape).astype(dtype)
        g = rng.standard_normal(yshape).astype(dtype)
        o1 = m(x)
        e1 = o1.copy()
        g1 = m.backward(g)
        eg1 = g1.copy()
        o2 = m(x)
        g2 = m.backward(g)
        assert o1 is o2
        assert g1 is g2
        assert_bitwise_equal(o2, e1)
        assert_bitwise_equal(g2, eg1)
        # another batch size, then the original one again
        xb = rng.standard_normal((3,) + xshape[1:]).astype(dtype)
        ob = m(xb)
        assert ob.shape == (3,) + yshape[1:]
        assert m.backward(np.ones_like(ob)).shape == xb.shape
        o3 = m(x)
        assert_bitwise_equal(o3, e1)
        assert_bitwise_equal(m.backward(g), eg1)

    @pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
    def test_eval_fresh_and_keeps_nothing(self, case, dtype, rng):
        _, make, xshape, yshape = case
        m = make(dtype)
        x = rng.standard_normal(xshape).astype(dtype)
        g = rng.standard_normal(yshape).astype(dtype)
        t = m(x).copy()
        m.backward(g)
        m(x)                        # state kept by a training forward ...
        assert m.eval() is m        # ... is dropped by eval()
        e1 = m(x)
        e2 = m(x)
        assert e1 is not e2
        assert not np.shares_memory(e1, e2)
        assert_bitwise_equal(e1, t)
        assert_bitwise_equal(e2, t)
        with pytest.raises(RuntimeError, match="backward"):
            m.backward(g)
        m.train()
        with pytest.raises(RuntimeError, match="backward"):
            m.backward(g)           # still no training-mode forward since eval()
        m(x)
        m.backward(g)

    @pytest.mark.parametrize("case", CASES + [
        ("identity", lambda dt: fnn.Identity(), (5, 6), (5, 6))],
        ids=CASE_IDS + ["identity"])
    def test_backward_before_forward(self, case, dtype):
        _, make, xshape, yshape = case
        m = make(dtype)
        with pytest.raises(RuntimeError, match="backward"):
            m.backward(np.ones(yshape, dtype))

    def test_eval_only_module_never_keeps_state(self, rng):
        m = _small_model().eval()
        x = rng.standard_normal((2, 4)).astype(np.float32)
        m(x)
        with pytest.raises(RuntimeError):
            m.backward(np.ones((2, 3), np.float32))

    def test_linear_own_output_fed_back(self, dtype, engine, rng):
        lin = fnn.Linear(6, 6, dtype=dtype, rng=1)
        x = rng.standard_normal((4, 6)).astype(dtype)
        y = lin(x)
        y_saved = y.copy()
        z = lin(y)
        assert_close(z, ref.linear_forward(y_saved, lin.weight.data, lin.bias.data), dtype, 6)
        np.testing.assert_array_equal(y, y_saved)     # the input was not overwritten
        g = rng.standard_normal((4, 6)).astype(dtype)
        gx = lin.backward(g)
        ex, eW, eb = ref.linear_backward(g, y_saved, lin.weight.data, None)
        assert_close(gx, ex, dtype, 6)
        assert_close(lin.weight.grad, eW, dtype, 4)
        assert_close(lin.bias.grad, eb, dtype, 4)
        # and once more (now the fresh output array is fed back)
        z_saved = z.copy()
        w = lin(z)
        assert_close(w, ref.linear_forward(z_saved, lin.weight.data, lin.bias.data), dtype, 6)

    def test_linear_own_input_grad_fed_back(self, dtype, rng):
        """The array backward returned, used as the next input: the next backward must not
        write the input gradient over the saved input before the weight gradient is done."""
        lin = fnn.Linear(6, 6, dtype=dtype, rng=1)
        x = rng.standard_normal((4, 6)).astype(dtype)
        lin(x)
        gx = lin.backward(rng.standard_normal((4, 6)).astype(dtype))
        x2 = gx.copy()
        lin(gx)
        lin.zero_grad()
        g = rng.standard_normal((4, 6)).astype(dtype)
        gx2 = lin.backward(g)
        ex, eW, eb = ref.linear_backward(g, x2, lin.weight.data, None)
        assert_close(gx2, ex, dtype, 6)
        assert_close(lin.weight.grad, eW, dtype, 4)

    @pytest.mark.parametrize("act,name,slope", ALL_ACTS, ids=ALL_ACT_IDS)
    def test_activation_own_output_fed_back(self, act, name, slope, dtype, rng):
        m = act()
        x = rng.standard_normal((4, 6)).astype(dtype)
        y = m(x)
        y_saved = y.copy()
        z = m(y)
        expect = ref.activation(y_saved, name, slope)
        assert_close(z, expect, dtype)
        g = rng.standard_normal((4, 6)).astype(dtype)
        assert_close(m.backward(g), _expected_act_grad(g, y_saved, expect, name, slope), dtype)

    @pytest.mark.parametrize("act", [fnn.Tanh, lambda: fnn.LeakyReLU(-0.3)],
                             ids=["tanh-fused", "leaky-0.3-unfused"])
    def test_sequential_own_output_fed_back(self, act, dtype, rng):
        """h = model(h) twice (a square network): the second call's forward and backward
        must equal those of the same network fed a copy.  (Linear and the activations
        handle this by writing to a fresh array when their buffer is the input; here the
        last layer's buffer is the network's input, which the first layer keeps for its
        weight gradient.)"""
        def make():
            return fnn.Sequential(fnn.Linear(6, 8, dtype=dtype, rng=1), act(),
                                  fnn.Linear(8, 6, dtype=dtype, rng=2))
        model, twin = make(), make()
        x = rng.standard_normal((4, 6)).astype(dtype)
        g = rng.standard_normal((4, 6)).astype(dtype)
        y = model(x)
        y_saved = y.copy()
        z = model(y)
        expect = _run_fused(twin, y_saved, g)
        assert_bitwise_equal(z, expect[0], "output")
        model.zero_grad()
        gx = model.backward(g)
        assert_bitwise_equal(gx, expect[1], "grad input")
        for n, p in model.named_parameters():
            assert_bitwise_equal(p.grad, expect[2][n], n)


# ============================================================================ threads
def test_threads_do_not_change_results(threads, native, rng):
    model = fnn.Sequential(fnn.Linear(512, 512, rng=0), fnn.ReLU(), fnn.Linear(512, 10, rng=1))
    x = rng.standard_normal((256, 512)).astype(np.float32)
    g = rng.standard_normal((256, 10)).astype(np.float32)
    runs = []
    for n in (1, 2, 1):
        fnn.set_num_threads(n)
        assert fnn.get_num_threads() == n
        runs.append(_run_fused(model, x, g))
    _assert_runs_bitwise(runs[0], runs[1])
    _assert_runs_bitwise(runs[0], runs[2])


def test_threads_do_not_change_results_float64(threads, native, rng):
    model = fnn.Sequential(fnn.Linear(300, 256, dtype=np.float64, rng=0), fnn.Tanh(),
                           fnn.Linear(256, 10, dtype=np.float64, rng=1))
    x = rng.standard_normal((256, 300))
    g = rng.standard_normal((256, 10))
    runs = []
    for n in (1, 2):
        fnn.set_num_threads(n)
        runs.append(_run_fused(model, x, g))
    _assert_runs_bitwise(runs[0], runs[1])


# ============================================================================= errors
LIN_WHO = re.escape("Linear(in_features=4, out_features=5)")


class TestErrors:
    def test_linear_wrong_ndim(self):
        lin = fnn.Linear(4, 5)
        with pytest.raises(ValueError, match=LIN_WHO + r".*2-D.*1-D.*\(4,\)"):
            lin(np.zeros(4, np.float32))
        with pytest.raises(ValueError, match=LIN_WHO + r".*2-D.*3-D.*\(2, 3, 4\)"):
            lin(np.zeros((2, 3, 4), np.float32))
        with pytest.raises(ValueError, match=LIN_WHO):
            lin(np.zeros((), np.float32))

    def test_linear_feature_mismatch(self):
        lin = fnn.Linear(4, 5)
        with pytest.raises(ValueError, match=LIN_WHO + r".*\b6\b.*\b4\b"):
            lin(np.zeros((2, 6), np.float32))

    def test_linear_dtype_mismatch(self):
        lin = fnn.Linear(4, 5)
        with pytest.raises(TypeError, match=LIN_WHO + r".*float64.*float32"):
            lin(np.zeros((2, 4)))
        lin64 = fnn.Linear(4, 5, dtype=np.float64)
        with pytest.raises(TypeError, match=LIN_WHO + r".*float32.*float64"):
            lin64(np.zeros((2, 4), np.float32))

    @pytest.mark.parametrize("bad", [np.int64, np.float16, np.complex64, np.bool_])
    def test_linear_bad_input_dtype(self, bad):
        lin = fnn.Linear(4, 5)
        with pytest.raises(TypeError, match=LIN_WHO + ".*" + np.dtype(bad).name):
            lin(np.zeros((2, 4), bad))

    def test_linear_non_ndarray(self):
        lin = fnn.Linear(4, 5)
        with pytest.raises(TypeError, match=LIN_WHO + ".*ndarray.*list"):
            lin([[0.0] * 4] * 2)
        with pytest.raises(TypeError, match=LIN_WHO):
            lin(None)

    def test_linear_backward_bad_grad(self):
        lin = fnn.Linear(4, 5)
        lin(np.zeros((2, 4), np.float32))
        with pytest.raises(ValueError, match=LIN_WHO + r".*\(2, 5\).*\(2, 4\)"):
            lin.backward(np.zeros((2, 4), np.float32))
        with pytest.raises(ValueError, match=LIN_WHO + r".*\(2, 5\).*\(5,\)"):
            lin.backward(np.zeros(5, np.float32))
        with pytest.raises(TypeError, match=LIN_WHO + r".*float64.*float32"):
            lin.backward(np.zeros((2, 5)))
        with pytest.raises(TypeError, match=LIN_WHO):
            lin.backward(np.zeros((2, 5), np.int32))
        with pytest.raises(TypeError, match=LIN_WHO):
            lin.backward([[0.0] * 5] * 2)
        assert lin.backward(np.zeros((2, 5), np.float32)).shape == (2, 4)

    @pytest.mark.parametrize("act", [fnn.ReLU, fnn.Sigmoid, fnn.Tanh,
                                     lambda: fnn.LeakyReLU(0.2), lambda: fnn.LeakyReLU(-0.3)],
                             ids=["relu", "sigmoid", "tanh", "leaky0.2", "leaky-0.3"])
    def test_activation_errors_name_module(self, act):
        m = act()
        who = re.escape(repr(m))
        with pytest.raises(TypeError, match=who + ".*int64"):
            m(np.zeros((2, 3), np.int64))
        with pytest.raises(TypeError, match=who + ".*float16"):
            m(np.zeros((2, 3), np.float16))
        with pytest.raises(TypeError, match=who + ".*ndarray"):
            m([1.0, 2.0])
        m(np.zeros((2, 3), np.float32))
        with pytest.raises(ValueError, match=who + r".*\(2, 3\).*\(3, 2\)"):
            m.backward(np.zeros((3, 2), np.float32))
        with pytest.raises(TypeError, match=who + ".*float32"):
            m.backward(np.zeros((2, 3)))

    def test_sequential_errors_are_prefixed(self):
        model = fnn.Sequential(fnn.Linear(4, 5), fnn.ReLU(), fnn.Linear(5, 3))
        with pytest.raises(ValueError, match=r"^Sequential\[0\]: " + LIN_WHO + r".*6.*4"):
            model(np.zeros((2, 6), np.float32))
        with pytest.raises(ValueError, match=r"^Sequential\[0\]: .*1-D"):
            model(np.zeros(4, np.float32))
        with pytest.raises(TypeError, match=r"^Sequential\[0\]: .*float64.*float32"):
            model(np.zeros((2, 4)))
        for bad in (np.int64, np.float16, np.complex64):
            with pytest.raises(TypeError, match=r"^Sequential\[0\]: .*" + np.dtype(bad).name):
                model(np.zeros((2, 4), bad))
        with pytest.raises(TypeError, match=r"^Sequential\[0\]: .*ndarray"):
            model([[0.0] * 4])
        model(np.zeros((2, 4), np.float32))
        with pytest.raises(ValueError, match=r"^Sequential\[2\]: .*\(2, 3\).*\(2, 5\)"):
            model.backward(np.zeros((2, 5), np.float32))
        with pytest.raises(TypeError, match=r"^Sequential\[2\]: .*float64.*float32"):
            model.backward(np.zeros((2, 3)))

    def test_sequential_error_in_later_layer(self):
        model = fnn.Sequential(fnn.Linear(4, 5), fnn.ReLU(), fnn.Linear(6, 3))
        with pytest.raises(ValueError, match=r"^Sequential\[2\]: " +
                           re.escape("Linear(in_features=6, out_features=3)") + r".*5.*6"):
            model(np.zeros((2, 4), np.float32))
        model2 = fnn.Sequential(fnn.Linear(4, 5), fnn.LeakyReLU(-0.3),
                                fnn.Linear(5, 3, dtype=np.float64))
        with pytest.raises(TypeError, match=r"^Sequential\[2\]: .*float32.*float64"):
            model2(np.zeros((2, 4), np.float32))

    def test_failed_forward_leaves_module_usable(self, rng):
        model = _small_model()
        x = rng.standard_normal((2, 4)).astype(np.float32)
        expect = model(x).copy()
        with pytest.raises(ValueError):
            model(np.zeros((2, 6), np.float32))
        assert_bitwise_equal(model(x), expect)
        model.backward(np.ones((2, 3), np.float32))
