"""fastnn.sklearn: scikit-learn's estimator checks, fidelity against scikit-learn itself
(same initial weights, same minibatch order), meta-estimators and pickling."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastnn  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _quiet():
    warnings.simplefilter("ignore", ConvergenceWarning)


@parametrize_with_checks([MLPClassifier(max_iter=50), MLPRegressor(max_iter=50)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        _quiet()
        check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _inject(est, ref, X, y):
    """Give `est` exactly `ref`'s initial weights (a 1-epoch fit of both with the same seed
    draws the same Glorot weights; then copy them) so both start from one point."""
    for m in (est, ref):
        m.set_params(warm_start=True)
    coefs = [c.copy() for c in ref.coefs_]
    ints = [b.copy() for b in ref.intercepts_]
    est.coefs_ = [c.copy() for c in coefs]
    est.intercepts_ = [b.copy() for b in ints]


CASES = [
    ("multiclass", dict(hidden_layer_sizes=(32, 16), activation="relu")),
    ("multiclass", dict(hidden_layer_sizes=(24,), activation="tanh")),
    ("multiclass", dict(hidden_layer_sizes=(24,), activation="logistic", alpha=1e-2)),
    ("binary", dict(hidden_layer_sizes=(16,), activation="relu", batch_size=37)),
    ("multilabel", dict(hidden_layer_sizes=(20,), activation="identity")),
]


def _clf_data(kind, digits):
    X, y = digits
    X, y = X[:600], y[:600]
    if kind == "binary":
        return X, (y % 2)
    if kind == "multilabel":
        return X, np.stack([y % 2, (y > 4), y % 3 == 0], axis=1).astype(int)
    return X, y


@pytest.mark.parametrize("solver,extra", [
    ("adam", {}), ("sgd", {}), ("sgd", dict(nesterovs_momentum=False)),
    ("sgd", dict(learning_rate="invscaling", momentum=0.5)),
    ("sgd", dict(learning_rate="adaptive", momentum=0.0)),
])
@pytest.mark.parametrize("kind,params", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_classifier_loss_curve_matches_sklearn(digits, solver, extra, kind, params,
                                               weighted):
    X, y = _clf_data(kind, digits)
    sw = np.random.default_rng(0).uniform(0.2, 2.0, len(X)) if weighted else None
    kw = dict(solver=solver, max_iter=20, random_state=3, tol=0.0, **params, **extra)
    with warnings.catch_warnings():
        _quiet()
        ref = SkMLPClassifier(**kw).fit(X, y, sample_weight=sw)
        est = MLPClassifier(**kw).fit(X, y, sample_weight=sw)
    assert est.n_iter_ == ref.n_iter_
    assert _rel(est.loss_curve_, ref.loss_curve_) < 1e-6
    for a, b in zip(est.coefs_ + est.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=1e-6,
                               atol=1e-9)
    assert est.t_ == ref.t_ and est.best_loss_ == pytest.approx(ref.best_loss_, rel=1e-6)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("n_out", [1, 3])
def test_regressor_loss_curve_matches_sklearn(solver, n_out):
    X, y = make_regression(n_samples=500, n_features=12, n_targets=n_out, noise=0.5,
                           random_state=0)
    y = y / y.std()
    kw = dict(solver=solver, hidden_layer_sizes=(30, 10), max_iter=20, random_state=1,
              tol=0.0, learning_rate_init=1e-3)
    with warnings.catch_warnings():
        _quiet()
        ref = SkMLPRegressor(**kw).fit(X, y)
        est = MLPRegressor(**kw).fit(X, y)
    assert _rel(est.loss_curve_, ref.loss_curve_) < 1e-6
    np.testing.assert_allclose(est.predict(X), ref.predict(X), rtol=1e-6, atol=1e-8)


def test_injected_weights_and_unshuffled_order(digits):
    """Inject one set of initial weights (warm_start) and a fixed minibatch order
    (shuffle=False): both libraries follow the same trajectory."""
    X, y = digits
    w0 = SkMLPClassifier(hidden_layer_sizes=(40,), max_iter=1, random_state=7)
    with warnings.catch_warnings():
        _quiet()
        w0.fit(X, y)
    kw = dict(hidden_layer_sizes=(40,), max_iter=20, shuffle=False, warm_start=True,
              tol=0.0, solver="adam")
    ref, est = SkMLPClassifier(**kw), MLPClassifier(**kw)
    for m in (ref, est):
        with warnings.catch_warnings():
            _quiet()
            m.set_params(max_iter=1).fit(X, y)  # sets classes_, layer shapes
        m.coefs_ = [c.copy() for c in w0.coefs_]
        m.intercepts_ = [b.copy() for b in w0.intercepts_]
        m.set_params(max_iter=20)
        with warnings.catch_warnings():
            _quiet()
            m.fit(X, y)
    assert _rel(est.loss_curve_[-20:], ref.loss_curve_[-20:]) < 1e-6


@pytest.mark.parametrize("est_cls,ref_cls", [(MLPClassifier, SkMLPClassifier),
                                             (MLPRegressor, SkMLPRegressor)])
def test_lbfgs_reaches_sklearn_loss(digits, est_cls, ref_cls):
    X, y = digits
    if est_cls is MLPRegressor:
        y = (y - y.mean()) / y.std()
    kw = dict(solver="lbfgs", hidden_layer_sizes=(30,), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        ref = ref_cls(**kw).fit(X, y)
        est = est_cls(**kw).fit(X, y)
    assert abs(est.loss_ - ref.loss_) / ref.loss_ < 1e-6
    assert est.n_iter_ == ref.n_iter_


def test_float32_input_kept(digits):
    X, y = digits
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(20,), max_iter=5, random_state=0)
        est.fit(X.astype(np.float32), y)
        ref = SkMLPClassifier(hidden_layer_sizes=(20,), max_iter=5, random_state=0)
        ref.fit(X.astype(np.float32), y)
    assert est.coefs_[0].dtype == np.float32
    assert est.predict_proba(X.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=1e-4)
    e64 = MLPClassifier(hidden_layer_sizes=(20,), max_iter=2, random_state=0,
                        dtype="float32")
    with warnings.catch_warnings():
        _quiet()
        e64.fit(X, y)
    assert e64.coefs_[0].dtype == np.float32
    # numpy's spellings name the same dtypes
    for spelling, want in [(np.float32, np.float32), (np.dtype("f8"), np.float64),
                           ("f4", np.float32)]:
        with warnings.catch_warnings():
            _quiet()
            est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, random_state=0,
                                dtype=spelling).fit(X, y)
        assert est.coefs_[0].dtype == want, spelling
    for bad in ("float16", np.int32, "fp32", 3):
        with pytest.raises(ValueError, match="dtype"):
            MLPClassifier(dtype=bad).fit(X, y)


def test_meta_estimators_and_pickle(digits):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=15, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        pipe = make_pipeline(StandardScaler(), clone(est)).fit(X, y)
        sk = SkMLPClassifier(hidden_layer_sizes=(16,), max_iter=15, random_state=0)
        ref = make_pipeline(StandardScaler(), sk).fit(X, y)
        assert pipe.score(X, y) == pytest.approx(ref.score(X, y), abs=1e-9)
        for n_jobs in (1, 2):
            gs = GridSearchCV(est, {"alpha": [1e-4, 1e-2]}, cv=2, n_jobs=n_jobs).fit(X, y)
            assert gs.best_params_["alpha"] in (1e-4, 1e-2)
        scores = cross_val_score(est, X, y, cv=3)
        np.testing.assert_allclose(scores, cross_val_score(sk, X, y, cv=3), atol=1e-9)
        est.fit(X, y)
    blob = pickle.dumps(est)
    again = pickle.loads(blob)
    assert np.array_equal(again.predict_proba(X), est.predict_proba(X))
    assert len(blob) < 3 * sum(c.nbytes + b.nbytes for c, b in zip(est.coefs_,
                                                                  est.intercepts_)) + 60_000
    with warnings.catch_warnings():
        _quiet()
        again.partial_fit(X, y)  # keeps training after unpickling
    assert again.n_iter_ >= 1
    sc = StandardScaler().set_output(transform="pandas") if _has_pandas() else None
    if sc is not None:
        import pandas as pd
        df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
        with warnings.catch_warnings():
            _quiet()
            p2 = make_pipeline(sc, clone(est)).fit(df, y)
        assert list(p2[-1].feature_names_in_) == list(df.columns)


def _has_pandas():
    try:
        import pandas  # noqa: F401
        return True
    except ImportError:
        return False


def test_partial_fit_classes_and_matches_sklearn(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), random_state=0)
    ref, est = SkMLPClassifier(**kw), MLPClassifier(**kw)
    classes = np.unique(y)
    for m in (ref, est):
        for i in range(3):
            m.partial_fit(X[i * 500:(i + 1) * 500], y[i * 500:(i + 1) * 500],
                          classes=classes)
    assert _rel(est.loss_curve_, ref.loss_curve_) < 1e-6
    assert list(est.classes_) == list(classes)


def test_early_stopping_matches_sklearn(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=40, random_state=0, early_stopping=True,
              n_iter_no_change=3)
    with warnings.catch_warnings():
        _quiet()
        ref = SkMLPClassifier(**kw).fit(X, y)
        est = MLPClassifier(**kw).fit(X, y)
    assert est.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(est.validation_scores_, ref.validation_scores_)
    assert est.best_validation_score_ == ref.best_validation_score_


def test_class_weight(digits):
    X, y = digits
    yb = (y == 0).astype(int)
    kw = dict(hidden_layer_sizes=(10,), max_iter=10, random_state=0)
    from sklearn.utils.class_weight import compute_sample_weight
    with warnings.catch_warnings():
        _quiet()
        a = MLPClassifier(class_weight="balanced", **kw).fit(X, yb)
        b = MLPClassifier(**kw).fit(X, yb, sample_weight=compute_sample_weight("balanced",
                                                                               yb))
        c = MLPClassifier(class_weight={0: 1.0, 1: 1.0}, **kw).fit(X, yb)
        d = MLPClassifier(**kw).fit(X, yb)
    assert np.array_equal(a.loss_curve_, b.loss_curve_)
    np.testing.assert_allclose(c.loss_curve_, d.loss_curve_, rtol=1e-12)  # unit weights
    assert not np.array_equal(a.loss_curve_, d.loss_curve_)


def test_n_threads_bitwise_and_checked(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(64,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        r = [MLPClassifier(n_threads=n, **kw).fit(X, y) for n in (1, 2)]
    assert np.array_equal(r[0].loss_curve_, r[1].loss_curve_)
    with pytest.raises(ValueError, match="n_threads"):
        MLPClassifier(n_threads=0, **kw).fit(X, y)


def test_to_fastnn(digits):
    X, y = digits
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(20, 10), activation="tanh", max_iter=5,
                            random_state=0).fit(X, y)
    net = est.to_fastnn()
    assert isinstance(net, fastnn.Sequential)
    logits = net.predict(X)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, est.predict_proba(X), rtol=1e-10, atol=1e-12)


def test_sparse_input(digits):
    sp = pytest.importorskip("scipy.sparse")
    X, y = digits
    kw = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        a = MLPClassifier(**kw).fit(sp.csr_matrix(X), y)
        b = MLPClassifier(**kw).fit(X, y)
    assert np.array_equal(a.loss_curve_, b.loss_curve_)
    assert np.array_equal(a.predict(sp.csr_matrix(X)), b.predict(X))


def test_missing_sklearn_names_the_extra():
    import subprocess
    import sys
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import fastnn.sklearn\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "pip install fastnn[sklearn]" in out.stdout


def test_import_fastnn_does_not_import_sklearn():
    import subprocess
    import sys
    code = "import sys, fastnn; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---- the fused loss-and-gradient pass: finite differences, scikit-learn's _backprop -------
GRAD_CASES = [
    ("clf", "multiclass", "relu"), ("clf", "binary", "tanh"),
    ("clf", "multilabel", "logistic"), ("reg", 1, "identity"), ("reg", 2, "leaky_relu"),
    ("clf", "multiclass", ["tanh", "leaky_relu"]), ("reg", 2, ["logistic", "relu"]),
]


def _grad_problem(task, kind, activation, weighted, dtype=np.float64):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(23, 6))
    if task == "clf":
        y = {"multiclass": rng.integers(0, 4, 23), "binary": rng.integers(0, 2, 23),
             "multilabel": rng.integers(0, 2, (23, 3))}[kind]
        est = MLPClassifier(hidden_layer_sizes=(7, 5), activation=activation, max_iter=1,
                            alpha=0.3, random_state=0, batch_size=23)
    else:
        y = rng.normal(size=(23, kind)) if kind > 1 else rng.normal(size=23)
        est = MLPRegressor(hidden_layer_sizes=(7, 5), activation=activation, max_iter=1,
                           alpha=0.3, random_state=0, batch_size=23)
    with warnings.catch_warnings():
        _quiet()
        est.fit(X.astype(dtype), y)
    sw = rng.uniform(0.3, 2.0, 23) if weighted else None
    if task == "clf":
        Y = est._label_binarizer.transform(y).astype(dtype)
    else:
        Y = np.asarray(y, dtype).reshape(23, -1)
    return est, X.astype(dtype), Y, sw


@pytest.mark.parametrize("task,kind,activation", GRAD_CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_backprop_gradient_finite_differences(task, kind, activation, weighted, variant):
    est, X, Y, sw = _grad_problem(task, kind, activation, weighted)
    flat = est._fnn_bind(X.dtype)
    grad = np.empty_like(flat)
    est._fnn_backprop(X, Y.copy(), sw, grad)

    k = Y.shape[1] if task == "reg" else 1
    n = X.shape[0] if sw is None else sw.sum()

    def f(_):
        # scikit-learn's gradient of the squared loss is (p - y)/n for every output while
        # its reported loss averages over the k outputs: the gradient is that of
        # k * data loss + L2 (reproduced as scikit-learn computes it)
        loss = est._fnn_backprop(X, Y.copy(), sw, np.empty_like(flat))
        wc = flat[:est._n_coef]
        l2 = 0.5 * est.alpha * np.dot(wc, wc) / n
        return k * (loss - l2) + l2
    num = fastnn.numerical_gradient(f, flat, h=1e-6)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("task,kind,activation",
                         [c for c in GRAD_CASES if isinstance(c[2], str)
                          and c[2] != "leaky_relu"])
@pytest.mark.parametrize("weighted", [False, True])
def test_backprop_matches_sklearn_backprop(task, kind, activation, weighted, dtype, engine):
    """Loss and gradient of one fused pass equal scikit-learn's own _backprop on the same
    weights, for both dtypes and both GEMM engines."""
    est, X, Y, sw = _grad_problem(task, kind, activation, weighted, dtype)
    ref = (SkMLPClassifier if task == "clf" else SkMLPRegressor)(
        hidden_layer_sizes=(7, 5), activation=activation, alpha=0.3)
    for k in ("n_layers_", "out_activation_", "n_outputs_"):
        setattr(ref, k, getattr(est, k))
    ref.coefs_ = [c.copy() for c in est.coefs_]
    ref.intercepts_ = [b.copy() for b in est.intercepts_]
    n = len(ref.coefs_)
    cg = [np.empty_like(c) for c in ref.coefs_]
    ig = [np.empty_like(b) for b in ref.intercepts_]
    loss_ref, cg, ig = ref._backprop(X, Y.astype(bool) if task == "clf" else Y,
                                     None if sw is None else sw.astype(dtype),
                                     [X] + [None] * n, [None] * n, cg, ig)
    flat = est._fnn_bind(X.dtype)
    grad = np.empty_like(flat)
    loss = est._fnn_backprop(X, Y.copy(), None if sw is None else sw.astype(dtype), grad)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert loss == pytest.approx(float(loss_ref), rel=tol)
    est._fnn_views(grad, [c.shape for c in est.coefs_])    # view grad like the params
    for a, b in zip(est.coefs_ + est.intercepts_, cg + ig):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 1e-2)


def test_per_layer_activation_and_leaky_relu(digits):
    X, y = digits
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(hidden_layer_sizes=(30, 20), activation=["tanh", "leaky_relu"],
                            max_iter=20, random_state=0).fit(X, y)
        same = MLPClassifier(hidden_layer_sizes=(30, 20), activation=["relu", "relu"],
                             max_iter=5, random_state=0).fit(X, y)
        ref = SkMLPClassifier(hidden_layer_sizes=(30, 20), activation="relu", max_iter=5,
                              random_state=0).fit(X, y)
    assert est.score(X, y) > 0.85
    assert _rel(same.loss_curve_, ref.loss_curve_) < 1e-6   # a list of one name = the name
    net = est.to_fastnn()
    assert [type(m).__name__ for m in net] == ["Linear", "Tanh", "Linear", "LeakyReLU",
                                               "Linear"]
    z = net.predict(X)
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), est.predict_proba(X),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="one name per hidden layer"):
        MLPClassifier(hidden_layer_sizes=(3, 3), activation=["relu"]).fit(X, y)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPClassifier(activation="swish").fit(X, y)


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_optional_activations(name, digits):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), activation=name, max_iter=2, random_state=0)
    if name not in fastnn.ops.ACTIVATIONS:
        with pytest.raises(ValueError, match=f"needs fastnn's {name.upper()} kernel"):
            est.fit(X, y)
        return
    with warnings.catch_warnings():   # with the kernel built: gradients by finite differences
        _quiet()
        est.fit(X[:40], y[:40])
    Y = est._label_binarizer.transform(y[:40]).astype(float)
    flat = est._fnn_bind(np.float64)
    grad = np.empty_like(flat)
    est._fnn_backprop(X[:40], Y.copy(), None, grad)
    num = fastnn.numerical_gradient(
        lambda _: est._fnn_backprop(X[:40], Y.copy(), None, np.empty_like(flat)), flat)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


def test_validation_loss_curve(digits, monkeypatch):
    import fastnn.sklearn as fsk
    seen = []
    real = fsk.train_test_split

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(out)
        return out
    monkeypatch.setattr(fsk, "train_test_split", spy)
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), max_iter=12, random_state=0, early_stopping=True,
              n_iter_no_change=50, tol=0.0)
    with warnings.catch_warnings():
        _quiet()
        est = MLPClassifier(**kw).fit(X, y)
        plain = MLPClassifier(hidden_layer_sizes=(20,), max_iter=3, random_state=0).fit(X, y)
    assert plain.validation_loss_curve_ is None
    assert len(est.validation_loss_curve_) == est.n_iter_ == 12
    assert np.all(np.diff(est.validation_loss_curve_) < 0)
    # the best epoch's entry is the loss of the restored (best) weights on the held-out
    # split: log-loss + alpha/(2 n_val) sum ||W||^2
    _, Xv, _, Yv = seen[0]
    p = est.predict_proba(Xv)
    w2 = sum(float(np.sum(c * c)) for c in est.coefs_)
    want = -np.mean(np.log(p[np.asarray(Yv, bool)])) + 0.5 * est.alpha * w2 / len(Xv)
    best = int(np.argmax(est.validation_scores_))
    assert est.validation_loss_curve_[best] == pytest.approx(want, rel=1e-10)


def test_restore_best_weights(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(20,), solver="sgd", learning_rate_init=0.9, momentum=0.9,
              max_iter=15, random_state=0, tol=0.0, n_iter_no_change=100)
    with warnings.catch_warnings():
        _quiet()
        last = MLPClassifier(**kw).fit(X, y)
        best = MLPClassifier(restore_best_weights=True, **kw).fit(X, y)
        k = int(np.argmin(last.loss_curve_))
        assert k < 14, "the case must have a loss that rises again"
        upto = MLPClassifier(**{**kw, "max_iter": k + 1}).fit(X, y)
    assert best.loss_curve_ == last.loss_curve_
    for a, b in zip(best.coefs_ + best.intercepts_, upto.coefs_ + upto.intercepts_):
        assert np.array_equal(a, b)
    assert not np.array_equal(best.coefs_[0], last.coefs_[0])


def test_progress_bar(digits, capsys):
    X, y = digits
    with warnings.catch_warnings():
        _quiet()
        MLPRegressor(hidden_layer_sizes=(5,), max_iter=3, progress=True,
                     random_state=0).fit(X, y.astype(float))
        MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert "MLPRegressor" in err and "3/3" in err and "MLPClassifier" not in err


@pytest.mark.parametrize("activation", ["relu", "tanh", ["logistic", "leaky_relu"]])
def test_dropout_gradient_finite_differences(activation):
    est, X, Y, sw = _grad_problem("clf", "multiclass", activation, True)
    rng = np.random.default_rng(1)
    masks = [(rng.random((X.shape[0], c.shape[1])) >= 0.3) / 0.7 for c in est.coefs_[:-1]]
    flat = est._fnn_bind(X.dtype)
    grad = np.empty_like(flat)
    est._fnn_backprop(X, Y.copy(), sw, grad, masks)
    num = fastnn.numerical_gradient(
        lambda _: est._fnn_backprop(X, Y.copy(), sw, np.empty_like(flat), masks), flat,
        h=1e-6)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


def test_dropout_fit(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(40,), max_iter=8, random_state=0)
    with warnings.catch_warnings():
        _quiet()
        base = MLPClassifier(**kw).fit(X, y)
        zero = MLPClassifier(dropout=0.0, **kw).fit(X, y)
        d1 = MLPClassifier(dropout=0.2, **kw).fit(X, y)
        d2 = MLPClassifier(dropout=0.2, **kw).fit(X, y)
    assert zero.loss_curve_ == base.loss_curve_
    assert d1.loss_curve_ == d2.loss_curve_            # seeded from random_state
    assert d1.loss_curve_ != base.loss_curve_
    assert d1.score(X, y) > 0.6          # it learns (chance: 0.1)
    with pytest.raises(ValueError, match="dropout must be a float in"):
        MLPClassifier(dropout=1.0).fit(X, y)
    with pytest.raises(ValueError, match="stochastic solver"):
        MLPClassifier(dropout=0.1, solver="lbfgs").fit(X, y)


@pytest.mark.parametrize("activation", ["relu", ["leaky_relu", "relu"]])
def test_saves_input_path_plumbing(activation, monkeypatch):
    """The path for activations whose backward reads the pre-activation (gelu, silu: the
    GEMM without activation, the activation on its own, z kept for the backward), driven
    with relu / leaky_relu, whose derivative is the same from z as from the output."""
    import fastnn.sklearn as fsk
    est, X, Y, sw = _grad_problem("clf", "multiclass", activation, True)
    flat = est._fnn_bind(X.dtype)
    fused = np.empty_like(flat)
    loss_fused = est._fnn_backprop(X, Y.copy(), sw, fused)
    codes = frozenset({int(fastnn.ops.ACTIVATIONS["relu"]),
                       int(fastnn.ops.ACTIVATIONS["leaky_relu"])})
    monkeypatch.setattr(fsk, "_saves_input", lambda: codes)
    split = np.empty_like(flat)
    assert est._fnn_backprop(X, Y.copy(), sw, split) == pytest.approx(loss_fused, rel=1e-14)
    np.testing.assert_allclose(split, fused, rtol=1e-12, atol=1e-15)
    num = fastnn.numerical_gradient(
        lambda _: est._fnn_backprop(X, Y.copy(), sw, np.empty_like(flat)), flat, h=1e-6)
    np.testing.assert_allclose(split, num, rtol=1e-5, atol=1e-7)
