"""Losses: MSELoss, CrossEntropyLoss and SVMLoss against the reference (value and gradient),
finite differences, thread-count determinism, numerical stability, label dtypes and the
error messages."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as ref
from _util import assert_bitwise_equal, uniform

REDUCTIONS = ("mean", "sum")
MARGINS = (1.0, 0.5)


# ---------------------------------------------------------------- helpers
def _check(loss_value, grad, expected, dtype, err_msg=""):
    """Loss value (a Python float) and gradient against the reference's (value, grad)."""
    ev, eg = expected
    assert type(loss_value) is float, type(loss_value)
    assert isinstance(grad, np.ndarray)
    assert grad.dtype == np.dtype(dtype), (grad.dtype, dtype)
    assert grad.shape == eg.shape, (grad.shape, eg.shape)
    if np.dtype(dtype) == np.float64:
        rtol, atol = 1e-12, 1e-15
    else:
        rtol, atol = 1e-5, 1e-7
    np.testing.assert_allclose(loss_value, ev, rtol=rtol, atol=atol * max(1.0, abs(ev)),
                               err_msg=f"loss value {err_msg}")
    scale = float(np.max(np.abs(eg))) if eg.size else 1.0
    np.testing.assert_allclose(grad, eg, rtol=rtol, atol=atol * max(scale, 1e-30),
                               err_msg=f"gradient {err_msg}")


def _labels(rng, n, c, dtype=np.int64):
    return rng.integers(0, c, size=n).astype(dtype)


def _svm_scores(rng, shape, dtype, labels, margin, gap=1e-3, low=-2.0, high=2.0):
    """Random scores with every hinge term s_j - s_y + margin (j != y) at least `gap` away
    from its kink at 0, in the given dtype."""
    s = rng.uniform(low, high, size=shape).astype(dtype)
    rows = np.arange(shape[0])
    for _ in range(100):
        d = s.astype(np.float64) - s[rows, labels].astype(np.float64)[:, None] + margin
        d[rows, labels] = np.inf
        near = np.abs(d) < gap
        if not near.any():
            return s
        s[near] = (s[near].astype(np.float64) + 37 * gap).astype(dtype)
    raise AssertionError("could not move the scores away from the hinge kinks")


def _assert_away_from_kinks(s, labels, margin, gap=1e-3):
    rows = np.arange(s.shape[0])
    d = s.astype(np.float64) - s[rows, labels].astype(np.float64)[:, None] + margin
    d[rows, labels] = np.inf
    assert np.all(np.abs(d) >= gap)


def _classification_losses():
    """(id, factory, reference(scores, labels, reduction))"""
    out = [("xent", lambda red: fnn.CrossEntropyLoss(reduction=red),
            lambda s, y, red: ref.cross_entropy_loss(s, y, red))]
    for m in MARGINS:
        out.append((f"svm-{m}", lambda red, m=m: fnn.SVMLoss(margin=m, reduction=red),
                    lambda s, y, red, m=m: ref.svm_loss(s, y, m, red)))
    return out


CLS = _classification_losses()
CLS_IDS = [c[0] for c in CLS]


def _scores(rng, name, shape, dtype, labels):
    if name.startswith("svm"):
        return _svm_scores(rng, shape, dtype, labels, float(name.split("-")[1]))
    return uniform(rng, shape, dtype, -3.0, 3.0)


# ---------------------------------------------------------------- MSE vs the reference
MSE_SHAPES = [(1, 1), (1, 7), (9, 1), (5, 4), (16, 33), (300, 1000)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_mse_matches_reference(shape, reduction, dtype, rng):
    pred = uniform(rng, shape, dtype)
    target = uniform(rng, shape, dtype)
    loss = fnn.MSELoss(reduction=reduction)
    value = loss(pred, target)
    _check(value, loss.backward(), ref.mse_loss(pred, target, reduction), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4, 5), (2, 1, 3), (4, 3, 2, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_mse_any_ndim(shape, reduction, dtype, rng):
    """1-D and N-D pred: the gradient has pred's shape."""
    pred = uniform(rng, shape, dtype)
    target = uniform(rng, shape, dtype)
    loss = fnn.MSELoss(reduction=reduction)
    value = loss(pred, target)
    grad = loss.backward()
    assert grad.shape == shape
    _check(value, grad, ref.mse_loss(pred, target, reduction), dtype)


def _strided_views(rng, shape, dtype):
    """Non-contiguous arrays of the given 2-D shape."""
    r, c = shape
    return {
        "transposed": np.ascontiguousarray(uniform(rng, (c, r), dtype)).T,
        "fortran": np.asfortranarray(uniform(rng, shape, dtype)),
        "sliced": uniform(rng, (2 * r, 3 * c), dtype)[::2, ::3],
        "reversed": uniform(rng, (r, c + 2), dtype)[::-1, 1:-1],
        "row_step": uniform(rng, (3 * r, c), dtype)[1::3],
        "col_reversed": uniform(rng, shape, dtype)[:, ::-1],
    }


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_noncontiguous(reduction, dtype, rng):
    shape = (11, 13)
    preds = _strided_views(rng, shape, dtype)
    targets = _strided_views(rng, shape, dtype)
    loss = fnn.MSELoss(reduction=reduction)
    for pn, pred in preds.items():
        for tn, target in targets.items():
            value = loss(pred, target)
            _check(value, loss.backward(), ref.mse_loss(pred, target, reduction), dtype,
                   f"pred {pn}, target {tn}")
    # a broadcast (read-only, zero-stride) target and a non-contiguous 3-D pred
    target = np.broadcast_to(uniform(rng, (1, 13), dtype), shape)
    pred = preds["transposed"]
    _check(loss(pred, target), loss.backward(), ref.mse_loss(pred, target, reduction), dtype,
           "broadcast target")
    pred3 = uniform(rng, (4, 6, 10), dtype)[:, ::2, ::-2]
    t3 = uniform(rng, pred3.shape, dtype)
    value = loss(pred3, t3)
    assert loss.backward().shape == pred3.shape
    _check(value, loss.backward(), ref.mse_loss(pred3, t3, reduction), dtype, "3-D strided")


def test_mse_inputs_untouched(dtype, rng):
    pred = uniform(rng, (6, 5), dtype)
    target = uniform(rng, (6, 5), dtype)
    p0, t0 = pred.copy(), target.copy()
    fnn.MSELoss()(pred, target)
    assert_bitwise_equal(pred, p0)
    assert_bitwise_equal(target, t0)


# ---------------------------------------------------------------- classification losses
CLS_SHAPES = [(1, 1), (1, 5), (7, 1), (4, 2), (13, 10), (64, 37), (300, 1000)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", CLS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,make,reference", CLS, ids=CLS_IDS)
def test_classification_matches_reference(name, make, reference, shape, reduction, dtype,
                                          rng, threads):
    fnn.set_num_threads(2)          # the 300x1000 case runs the threaded path
    n, c = shape
    y = _labels(rng, n, c)
    s = _scores(rng, name, shape, dtype, y)
    loss = make(reduction)
    value = loss(s, y)
    _check(value, loss.backward(), reference(s, y, reduction), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,make,reference", CLS, ids=CLS_IDS)
def test_classification_noncontiguous(name, make, reference, reduction, dtype, rng):
    shape = (12, 9)
    loss = make(reduction)
    for vn, base in _strided_views(rng, shape, dtype).items():
        y = _labels(rng, *shape)
        s = base
        if name.startswith("svm"):      # kink-free values, written through the view
            margin = float(name.split("-")[1])
            s[...] = _svm_scores(rng, shape, dtype, y, margin)
            _assert_away_from_kinks(s, y, margin)
        assert not s.flags.c_contiguous
        value = loss(s, y)
        _check(value, loss.backward(), reference(s, y, reduction), dtype, vn)


def test_classification_inputs_untouched(dtype, rng):
    s = uniform(rng, (8, 6), dtype)
    y = _labels(rng, 8, 6, np.int32)
    s0, y0 = s.copy(), y.copy()
    for loss in (fnn.CrossEntropyLoss(), fnn.SVMLoss()):
        loss(s, y)
        assert_bitwise_equal(s, s0)
        assert np.array_equal(y, y0) and y.dtype == np.int32


def test_svm_exactly_zero_margin_is_inactive(dtype):
    """A hinge term of exactly 0 contributes neither loss nor gradient (the docstring's
    subgradient convention, as the reference)."""
    s = np.array([[2.0, 1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]], dtype)
    y = np.array([0, 1])
    for margin in (1.0, 0.0):
        for red in REDUCTIONS:
            loss = fnn.SVMLoss(margin=margin, reduction=red)
            value = loss(s, y)
            _check(value, loss.backward(), ref.svm_loss(s, y, margin, red), dtype,
                   f"margin {margin}")
    loss = fnn.SVMLoss(margin=0.0)
    assert loss(s[1:], y[1:]) == 0.0
    assert not loss.backward().any()


def test_svm_margin_hyperparameter(rng):
    """The margin changes the loss the way the reference says; repr shows it."""
    y = _labels(rng, 10, 7)
    s = rng.uniform(-1, 1, (10, 7))
    values = []
    for m in (0.25, 1.0, 3.0):
        loss = fnn.SVMLoss(margin=m)
        assert f"margin={m}" in repr(loss)
        values.append(loss(s, y))
        np.testing.assert_allclose(values[-1], ref.svm_loss(s, y, m)[0], rtol=1e-12)
    assert values[0] < values[1] < values[2]


def test_reduction_sum_is_n_times_mean(rng):
    s = rng.standard_normal((17, 5))
    y = _labels(rng, 17, 5)
    t = rng.standard_normal((17, 5))
    for make, args in ((fnn.CrossEntropyLoss, (s, y)), (fnn.SVMLoss, (s, y))):
        mean, total = make(reduction="mean"), make(reduction="sum")
        np.testing.assert_allclose(total(*args), 17 * mean(*args), rtol=1e-12)
        np.testing.assert_allclose(total.backward(), 17 * mean.backward(), rtol=1e-12)
    mean, total = fnn.MSELoss("mean"), fnn.MSELoss("sum")
    np.testing.assert_allclose(total(s, t), s.size * mean(s, t), rtol=1e-12)
    np.testing.assert_allclose(total.backward(), s.size * mean.backward(), rtol=1e-12)


def test_default_reduction_is_mean():
    for loss in (fnn.MSELoss(), fnn.CrossEntropyLoss(), fnn.SVMLoss()):
        assert loss.reduction == "mean"
        assert "reduction='mean'" in repr(loss)
    assert fnn.SVMLoss().margin == 1.0


# ---------------------------------------------------------------- finite differences
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5, 4), (1, 1), (7,), (2, 3, 4)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_mse(shape, reduction, rng):
    pred = rng.standard_normal(shape)
    target = rng.standard_normal(shape)
    report = fnn.gradcheck(fnn.MSELoss(reduction=reduction), pred, target)
    assert report.passed


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 5), (1, 3), (3, 1), (4, 11)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_cross_entropy(shape, reduction, rng):
    y = _labels(rng, *shape)
    s = rng.standard_normal(shape) * 3
    assert fnn.gradcheck(fnn.CrossEntropyLoss(reduction=reduction), s, y).passed


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("shape", [(6, 5), (1, 3), (4, 11)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_svm(shape, margin, reduction, rng):
    y = _labels(rng, *shape)
    s = _svm_scores(rng, shape, np.float64, y, margin)
    _assert_away_from_kinks(s, y, margin)
    loss = fnn.SVMLoss(margin=margin, reduction=reduction)
    # the check must involve active and inactive terms
    loss(s, y)
    g = loss.backward()
    if shape[1] > 3:
        assert (g > 0).any() and (g == 0).any()
    assert fnn.gradcheck(loss, s, y).passed


# ---------------------------------------------------------------- determinism
LARGE = (300, 1000)


def _run_losses(s, y, t):
    out = []
    for loss, a, b in ((fnn.MSELoss("mean"), s, t), (fnn.MSELoss("sum"), s, t),
                       (fnn.CrossEntropyLoss("mean"), s, y), (fnn.CrossEntropyLoss("sum"), s, y),
                       (fnn.SVMLoss(1.0), s, y), (fnn.SVMLoss(0.5, "sum"), s, y)):
        v = loss(a, b)
        out.append((repr(loss), v, loss.backward().copy()))
    return out


def test_thread_count_does_not_change_results(dtype, native, threads, rng):
    s = uniform(rng, LARGE, dtype, -4, 4)
    t = uniform(rng, LARGE, dtype, -4, 4)
    y = _labels(rng, LARGE[0], LARGE[1])
    fnn.set_num_threads(1)
    one = _run_losses(s, y, t)
    fnn.set_num_threads(2)
    two = _run_losses(s, y, t)
    for (name, v1, g1), (_, v2, g2) in zip(one, two):
        assert v1 == v2 or (np.isnan(v1) and np.isnan(v2)), (name, v1, v2)
        assert_bitwise_equal(g2, g1, name)
    # and the threaded results are repeatable
    again = _run_losses(s, y, t)
    for (name, v1, g1), (_, v2, g2) in zip(two, again):
        assert v1 == v2, name
        assert_bitwise_equal(g2, g1, name)


def test_engines_agree(dtype, threads, rng):
    """The blas engine runs the losses single-threaded; the value is the same."""
    s = uniform(rng, LARGE, dtype, -4, 4)
    t = uniform(rng, LARGE, dtype, -4, 4)
    y = _labels(rng, LARGE[0], LARGE[1])
    fnn.set_num_threads(2)
    fnn.set_engine("native")
    a = _run_losses(s, y, t)
    fnn.set_engine("blas")
    b = _run_losses(s, y, t)
    for (name, v1, g1), (_, v2, g2) in zip(a, b):
        assert v1 == v2, name
        assert_bitwise_equal(g2, g1, name)


# ---------------------------------------------------------------- numerical stability
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_large_logits(reduction, dtype):
    s = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, -1e4],
                  [0.0, 1e4, 1e4]], dtype)
    y = np.array([1, 2, 0, 0])
    loss = fnn.CrossEntropyLoss(reduction)
    value = loss(s, y)
    g = loss.backward()
    assert np.isfinite(value)
    assert np.all(np.isfinite(g))
    ev, eg = ref.cross_entropy_loss(s, y, reduction)
    assert np.isfinite(ev)
    np.testing.assert_allclose(value, ev, rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(g, eg, rtol=1e-6, atol=1e-7)


def test_cross_entropy_float32_logits_100_to_1000(rng):
    s = rng.uniform(100, 1000, (50, 20)).astype(np.float32)
    s[::2] *= -1
    y = _labels(rng, 50, 20)
    loss = fnn.CrossEntropyLoss()
    value = loss(s, y)
    g = loss.backward()
    assert np.isfinite(value) and value > 0
    assert np.all(np.isfinite(g))
    ev, eg = ref.cross_entropy_loss(s, y)
    np.testing.assert_allclose(value, ev, rtol=1e-5)
    np.testing.assert_allclose(g, eg, rtol=1e-5, atol=1e-7)
    # each row of the (mean) gradient sums to 0
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-6)


def test_cross_entropy_confident_correct_is_zero(dtype):
    s = np.array([[50.0, -50.0], [-50.0, 50.0]], dtype)
    loss = fnn.CrossEntropyLoss()
    assert loss(s, np.array([0, 1])) == pytest.approx(0.0, abs=1e-20)
    assert loss(s, np.array([1, 0])) == pytest.approx(100.0, rel=1e-6)


# ---------------------------------------------------------------- label dtypes
LABEL_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                np.uint64, np.intp]


@pytest.mark.parametrize("ldt", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name,make,reference", CLS, ids=CLS_IDS)
def test_integer_label_dtypes(name, make, reference, ldt, rng):
    n, c = 10, 6
    y64 = _labels(rng, n, c)
    s = _scores(rng, name, (n, c), np.float64, y64)
    y = y64.astype(ldt)
    for red in REDUCTIONS:
        loss = make(red)
        value = loss(s, y)
        _check(value, loss.backward(), reference(s, y64, red), np.float64, np.dtype(ldt).name)


@pytest.mark.parametrize("name,make,reference", CLS, ids=CLS_IDS)
def test_noncontiguous_and_byteswapped_labels(name, make, reference, rng):
    n, c = 9, 5
    y_base = _labels(rng, 3 * n, c, np.int64)
    y = y_base[::3]
    assert not y.flags.c_contiguous
    y_rev = _labels(rng, n, c, np.int32)[::-1]
    y_swapped = _labels(rng, n, c).astype(">i8")
    for label, lab in (("strided", y), ("reversed", y_rev), ("big-endian", y_swapped)):
        s = _scores(rng, name, (n, c), np.float64, lab.astype(np.int64))
        loss = make("mean")
        value = loss(s, lab)
        _check(value, loss.backward(), reference(s, lab.astype(np.int64), "mean"),
               np.float64, label)


# ---------------------------------------------------------------- errors
ALL_LOSSES = [("MSELoss", fnn.MSELoss), ("CrossEntropyLoss", fnn.CrossEntropyLoss),
              ("SVMLoss", fnn.SVMLoss)]
CLS_CLASSES = [("CrossEntropyLoss", fnn.CrossEntropyLoss), ("SVMLoss", fnn.SVMLoss)]
_cls_ids = [n for n, _ in CLS_CLASSES]
_all_ids = [n for n, _ in ALL_LOSSES]


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
@pytest.mark.parametrize("ldt", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_float_labels_rejected(name, cls, ldt):
    s = np.zeros((3, 4))
    with pytest.raises(TypeError, match=name):
        cls()(s, np.array([0, 1, 2], ldt))


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
def test_bool_labels_rejected(name, cls):
    with pytest.raises(TypeError, match=name):
        cls()(np.zeros((3, 4)), np.array([True, False, True]))


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
def test_non_ndarray_labels_rejected(name, cls):
    with pytest.raises(TypeError, match=name):
        cls()(np.zeros((3, 4)), [0, 1, 2])


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
@pytest.mark.parametrize("bad,where", [(-1, 0), (-1, 4), (5, 2), (5, 4), (100, 3)])
def test_labels_out_of_range(name, cls, bad, where):
    c = 5
    y = np.array([0, 1, 2, 3, 4], np.int64)
    y[where] = bad
    with pytest.raises(ValueError, match=rf"{name}.*labels\[{where}\] = {bad}"):
        cls()(np.zeros((5, c)), y)


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
def test_labels_out_of_range_names_first_bad_index(name, cls):
    y = np.array([0, 3, 7, -2, 1], np.int16)
    with pytest.raises(ValueError, match=r"labels\[2\] = 7"):
        cls()(np.zeros((5, 4)), y)
    with pytest.raises(ValueError, match=r"labels\[1\] = 4"):
        cls()(np.zeros((5, 4)), np.array([0, 4, 0, 0, 0], np.uint8))


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
def test_labels_wrong_shape(name, cls):
    s = np.zeros((4, 3))
    for y in (np.zeros(3, np.int64), np.zeros(5, np.int64), np.zeros((4, 1), np.int64),
              np.zeros((1, 4), np.int64), np.array(0, np.int64)):
        with pytest.raises(ValueError, match=name):
            cls()(s, y)


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
def test_scores_must_be_2d(name, cls):
    with pytest.raises(ValueError, match=name):
        cls()(np.zeros(4), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=name):
        cls()(np.zeros((4, 3, 2)), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=name):
        cls()(np.array(1.0), np.zeros(1, np.int64))


@pytest.mark.parametrize("name,cls", CLS_CLASSES, ids=_cls_ids)
def test_empty_batch_rejected(name, cls):
    with pytest.raises(ValueError, match=name):
        cls()(np.zeros((0, 3)), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=name):
        cls()(np.zeros((3, 0)), np.zeros(3, np.int64))


def test_mse_empty_and_0d_rejected():
    for shape in ((0,), (0, 3), (3, 0), (2, 0, 2), ()):
        with pytest.raises(ValueError, match="MSELoss"):
            fnn.MSELoss()(np.zeros(shape), np.zeros(shape))


def test_mse_target_shape_mismatch():
    for ps, ts in (((3, 4), (4, 3)), ((3, 4), (12,)), ((3, 4), (3, 4, 1)), ((5,), (5, 1)),
                   ((3, 4), (1, 4))):
        with pytest.raises(ValueError, match="MSELoss"):
            fnn.MSELoss()(np.zeros(ps), np.zeros(ts))


def test_mse_target_dtype_mismatch():
    with pytest.raises(TypeError, match="MSELoss"):
        fnn.MSELoss()(np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float64))
    with pytest.raises(TypeError, match="MSELoss"):
        fnn.MSELoss()(np.zeros((3, 4), np.float64), np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="MSELoss"):
        fnn.MSELoss()(np.zeros((3, 4)), np.zeros((3, 4), np.int64))
    with pytest.raises(TypeError, match="MSELoss"):
        fnn.MSELoss()(np.zeros((3, 4)), [[0.0] * 4] * 3)


@pytest.mark.parametrize("name,cls", ALL_LOSSES, ids=_all_ids)
@pytest.mark.parametrize("pdt", [np.int32, np.int64, np.float16, np.complex128, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_pred_dtype_rejected(name, cls, pdt):
    pred = np.zeros((3, 4), pdt)
    other = pred if cls is fnn.MSELoss else np.zeros(3, np.int64)
    with pytest.raises(TypeError, match=name):
        cls()(pred, other)


@pytest.mark.parametrize("name,cls", ALL_LOSSES, ids=_all_ids)
def test_pred_not_ndarray(name, cls):
    other = np.zeros((2, 2)) if cls is fnn.MSELoss else np.zeros(2, np.int64)
    with pytest.raises(TypeError, match=name):
        cls()([[0.0, 1.0], [1.0, 0.0]], other)
    with pytest.raises(TypeError, match=name):
        cls()(None, other)


@pytest.mark.parametrize("name,cls", ALL_LOSSES, ids=_all_ids)
def test_backward_before_forward(name, cls):
    with pytest.raises(RuntimeError, match=name):
        cls().backward()


@pytest.mark.parametrize("name,cls", ALL_LOSSES, ids=_all_ids)
def test_bad_reduction(name, cls):
    for red in ("avg", "none", "Mean", None):
        with pytest.raises(ValueError, match=name):
            cls(reduction=red)


def test_svm_bad_margin():
    for m in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="SVMLoss"):
            fnn.SVMLoss(margin=m)
    with pytest.raises(TypeError, match="SVMLoss"):
        fnn.SVMLoss(margin="big")
    with pytest.raises(TypeError, match="SVMLoss"):
        fnn.SVMLoss(margin=None)


def test_failed_forward_keeps_previous_gradient(rng):
    """A rejected call does not clobber the gradient of the last successful forward."""
    s = rng.standard_normal((4, 3))
    y = np.array([0, 1, 2, 0])
    loss = fnn.CrossEntropyLoss()
    loss(s, y)
    g = loss.backward().copy()
    with pytest.raises(ValueError):
        loss(s, np.array([0, 1, 3, 0]))
    assert_bitwise_equal(loss.backward(), g)


# ---------------------------------------------------------------- gradient buffer reuse
@pytest.mark.parametrize("name,cls", ALL_LOSSES, ids=_all_ids)
def test_backward_reuses_buffer(name, cls, dtype, rng):
    shape = (6, 5)
    loss = cls()

    def second(a):
        return uniform(rng, shape, dtype) if cls is fnn.MSELoss else _labels(rng, 6, 5)

    p1, p2 = uniform(rng, shape, dtype), uniform(rng, shape, dtype)
    t1, t2 = second(p1), second(p2)
    loss(p1, t1)
    g1 = loss.backward()
    assert loss.backward() is g1            # backward() twice: the same array
    loss(p2, t2)
    g2 = loss.backward()
    assert g2 is g1                          # same shape: the buffer is reused
    ref_fn = {fnn.MSELoss: ref.mse_loss, fnn.CrossEntropyLoss: ref.cross_entropy_loss,
              fnn.SVMLoss: ref.svm_loss}[cls]
    np.testing.assert_allclose(g1, ref_fn(p2, t2)[1], rtol=1e-5)   # holds the new gradient
    # another shape gets its own buffer; the right gradient either way
    p3 = uniform(rng, (3, 5), dtype)
    t3 = uniform(rng, (3, 5), dtype) if cls is fnn.MSELoss else _labels(rng, 3, 5)
    loss(p3, t3)
    assert loss.backward().shape == (3, 5)
    np.testing.assert_allclose(loss.backward(), ref_fn(p3, t3)[1], rtol=1e-5)


def test_mse_nd_backward_reuses_memory(rng):
    loss = fnn.MSELoss()
    p = rng.standard_normal((2, 3, 4))
    loss(p, p * 0)
    g1 = loss.backward()
    loss(p + 1, p * 0)
    g2 = loss.backward()
    assert g2.shape == (2, 3, 4)
    assert np.shares_memory(g1, g2)
    np.testing.assert_allclose(g2, 2 * (p + 1) / p.size, rtol=1e-12)


@pytest.mark.parametrize("name,cls", ALL_LOSSES, ids=_all_ids)
def test_pred_may_be_the_previous_gradient(name, cls, rng):
    """Feeding the loss's own gradient buffer back in as pred gives the right answer (the
    buffer is overwritten by the call that reads it)."""
    loss = cls()
    p = rng.standard_normal((5, 4)) * 3
    t = rng.standard_normal((5, 4)) if cls is fnn.MSELoss else np.array([0, 1, 2, 3, 0])
    ref_fn = {fnn.MSELoss: ref.mse_loss, fnn.CrossEntropyLoss: ref.cross_entropy_loss,
              fnn.SVMLoss: ref.svm_loss}[cls]
    loss(p, t)
    g = loss.backward()
    expected = ref_fn(g.copy(), t)
    value = loss(g, t)
    _check(value, loss.backward(), expected, np.float64)


# The softmax's exponentials go through the kernel table's vectorized exp: every ISA variant
# against the reference, with extreme logits (very negative: exp underflows to 0; -inf).
@pytest.mark.parametrize("shape", [(32, 3), (64, 10), (5, 100), (700, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_every_kernel_variant(shape, variant, dtype, rng):
    n, c = shape
    y = _labels(rng, n, c)
    s = uniform(rng, shape, dtype, -30.0, 30.0)
    s[0, :] = 0
    s[0, y[0]] = -200.0           # the label's probability underflows to 0 (exp(-200))
    if c > 2:
        s[1, (y[1] + 1) % c] = -np.inf
    loss = fnn.CrossEntropyLoss()
    value = loss(s, y)
    _check(value, loss.backward(), ref.cross_entropy_loss(s, y, "mean"), dtype)
