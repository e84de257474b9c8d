"""Dropout(p, seed=None): inverted dropout with masks from a counter-based RNG keyed on (seed,
step, element index).

The kernel's bits equal the NumPy twin's (fastnn._reference) in every kernel variant and
dtype; the kept fraction is within 4 standard deviations of 1 - p over 10**6 elements; masks
differ between steps, repeat for the same seed and for any thread count; backward uses the
forward's mask; gradcheck (float64, fixed mask) and PyTorch parity with an injected mask
(forward, every gradient, 10 SGD steps); the compiled step (and the Trainer's compiled
epochs) are bitwise equal to the module path and advance the same counter; a Trainer run is
reproduced by its seed; the seed and counter survive state_dict, save/load and checkpoints;
eval mode, compile_inference and ONNX export treat Dropout as the identity; bad arguments
raise naming Dropout."""
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _reference as R
from fastnn._kernels import dropout as D
from _util import VARIANTS, assert_bitwise_equal, run_python

KERNEL = {np.dtype(np.float32): D._dropout["float"], np.dtype(np.float64): D._dropout["double"]}


def mask_of(d, shape, step):
    """The float64 mask of Dropout d's forward number `step` (the NumPy twin)."""
    return R.dropout_mask(shape, d.seed, step, d.p)


# ------------------------------------------------------------------ the RNG and its twin
@pytest.mark.parametrize("seed,step", [(0, 0), (1, 0), (0, 1), (12345, 678),
                                       (2**64 - 1, 2**64 - 1), (2**63, 3)])
def test_key_and_bits_equal_the_numpy_twin(seed, step):
    k = D.key(seed, step)
    assert k == R.dropout_key(seed, step)
    for m, n in ((1, 1), (3, 7), (17, 33), (64, 513)):
        assert_bitwise_equal(D.bits(m, n, k), R.dropout_bits((m, n), k))


def test_keys_differ_between_seeds_and_steps():
    keys = {D.key(s, t) for s in range(20) for t in range(50)}
    assert len(keys) == 1000


def test_threshold_is_floor_p_2_32():
    for p in (0.0, 1e-12, 0.1, 0.25, 0.5, 0.9, 1 - 2**-40):
        assert D.threshold(p) == int(p * 2**32)
    assert D.threshold(0.0) == 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.85])
def test_kernel_equals_reference_in_every_variant(variant, dt, p, threads):
    fnn.set_kernel_variant(variant)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 257)).astype(dt)      # 77k values: 2 threads run
    x[0, :5] = [np.inf, -np.inf, np.nan, 0.0, -0.0]
    want = R.dropout(x, 99, 7, p)
    for nt in (1, 2):
        y = np.empty_like(x)
        KERNEL[x.dtype](x, y, D.key(99, 7), D.threshold(p), 1.0 / (1.0 - p), nt)
        assert_bitwise_equal(y, want, f"{variant} {np.dtype(dt)} p={p} threads={nt}")


def test_kernel_on_strided_rows():
    x = np.random.default_rng(0).standard_normal((40, 30))
    xs = x[::2, 3:20]                        # row stride 60, unit column stride
    out = np.zeros((20, 40))[:, 5:22]
    KERNEL[xs.dtype](xs, out, D.key(4, 2), D.threshold(0.3), 1 / 0.7)
    assert_bitwise_equal(out, R.dropout(np.ascontiguousarray(xs), 4, 2, 0.3))


# ------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8, 0.95])
def test_kept_fraction_within_4_sigma(p):
    n = 10**6
    d = fnn.Dropout(p, seed=2024)
    x = np.ones((1000, 1000))
    for step in range(3):
        y = d(x)
        kept = np.count_nonzero(y)
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(kept - n * (1 - p)) <= 4 * sigma, (p, step, kept)
        # kept values are exactly x / (1 - p), dropped ones exactly 0
        assert np.all((y == 0) | (y == 1.0 / (1.0 - p)))


def test_mask_bits_are_uniform_and_uncorrelated():
    b = D.bits(1000, 1000, D.key(5, 0)).astype(np.float64).ravel() / 2**32
    assert abs(b.mean() - 0.5) < 4 * np.sqrt(1 / 12 / b.size)
    # neighbours (in a row and across rows) are uncorrelated
    for lag in (1, 1000):
        c = np.corrcoef(b[:-lag], b[lag:])[0, 1]
        assert abs(c) < 4 / np.sqrt(b.size)


def test_masks_differ_between_steps_and_repeat_for_the_same_seed():
    x = np.ones((64, 100), np.float32)
    a, b = fnn.Dropout(0.5, seed=11), fnn.Dropout(0.5, seed=11)
    ma = [a(x).copy() for _ in range(5)]
    mb = [b(x).copy() for _ in range(5)]
    for i in range(5):
        assert_bitwise_equal(ma[i], mb[i])                 # same seed: same sequence
        for j in range(i):
            assert not np.array_equal(ma[i], ma[j])        # steps differ
    c = fnn.Dropout(0.5, seed=12)
    assert not np.array_equal(c(x), ma[0])                 # seeds differ
    assert a.step_count == 5


_RUN = """
import hashlib, sys, numpy as np, fastnn
fastnn.set_num_threads(int(sys.argv[1]))
fastnn.manual_seed(2026)
d = fastnn.Dropout(0.3)                               # a seed drawn from manual_seed's
x = np.ones((400, 250), np.float32)
h = hashlib.sha256()
for _ in range(3):
    h.update(d(x).tobytes())
print(d.seed, h.hexdigest())
"""


def test_masks_identical_across_runs_and_thread_counts():
    """Fresh interpreters (1 and 2 threads, 10**5 values: 2 threads run) draw the same
    seed from manual_seed and the same three masks -- also equal to this process's."""
    outs = []
    for nt in ("1", "2", "1"):
        r = run_python(["-c", _RUN, nt])
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.split())
    assert outs[0] == outs[1] == outs[2]
    seed = int(outs[0][0])
    import hashlib
    h = hashlib.sha256()
    x = np.ones((400, 250), np.float32)
    for step in range(3):
        h.update(R.dropout(x, seed, step, 0.3).tobytes())
    assert h.hexdigest() == outs[0][1]


def test_masks_identical_for_any_thread_count(threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 300))                    # 153,600 values: 2 threads run
    g = rng.standard_normal((512, 300))
    out = {}
    for nt in (1, 2):
        fnn.set_num_threads(nt)
        d = fnn.Dropout(0.4, seed=77)
        ys = [d(x).copy() for _ in range(3)]
        gs = d.backward(g).copy()
        out[nt] = ys, gs
    for a, b in zip(out[1][0], out[2][0]):
        assert_bitwise_equal(a, b)
    assert_bitwise_equal(out[1][1], out[2][1])


# ------------------------------------------------------------------- the module itself
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_forward_backward_use_the_same_mask(dt):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((33, 17)).astype(dt)
    g = rng.standard_normal((33, 17)).astype(dt)
    d = fnn.Dropout(0.3, seed=5)
    d(x)                                                   # step 0
    y = d(x)                                               # step 1
    m = mask_of(d, x.shape, 1).astype(dt)
    assert_bitwise_equal(y, x * m)
    assert_bitwise_equal(d.backward(g), g * m)
    assert y.dtype == dt and d.backward(g).dtype == dt
    assert d.backward(g, input_grad=False) is None


def test_any_rank_input():
    d = fnn.Dropout(0.5, seed=1)
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4) + 1
    y = d(x)
    assert y.shape == x.shape
    m = mask_of(d, (6, 4), 0).reshape(x.shape)
    assert_bitwise_equal(y, x * m)
    assert d.backward(np.ones_like(x)).shape == x.shape
    v = np.ones(10)
    assert d(v).shape == (10,)


def test_eval_mode_is_the_identity_and_keeps_the_counter():
    d = fnn.Dropout(0.5, seed=3).eval()
    x = np.random.default_rng(0).standard_normal((8, 8))
    assert d(x) is x
    assert d.step_count == 0
    with pytest.raises(RuntimeError, match="Dropout"):
        d.backward(x)


def test_p_zero_is_the_identity_in_training():
    d = fnn.Dropout(0.0, seed=3)
    x = np.random.default_rng(0).standard_normal((8, 8))
    assert_bitwise_equal(d(x), x)
    assert_bitwise_equal(d.backward(x), x)


def test_repr_and_attributes():
    assert repr(fnn.Dropout()) == "Dropout(p=0.5)"
    assert repr(fnn.Dropout(0.25, seed=1)) == "Dropout(p=0.25)"
    m = fnn.Sequential(fnn.Linear(3, 4), fnn.Dropout(0.1))
    assert "(1): Dropout(p=0.1)" in repr(m)
    d = fnn.Dropout(0.2, seed=9)
    assert d.p == 0.2 and d.seed == 9 and d.step_count == 0
    assert list(d.parameters()) == []
    assert fnn.nn.Dropout is fnn.Dropout
    with pytest.raises(AttributeError):
        d.p = 0.3


def test_manual_seed_sets_the_drawn_seeds():
    fnn.manual_seed(123)
    a = [fnn.Dropout(0.5).seed for _ in range(3)]
    fnn.manual_seed(123)
    b = [fnn.Dropout(0.5).seed for _ in range(3)]
    assert a == b and len(set(a)) == 3
    fnn.manual_seed(124)
    assert fnn.Dropout(0.5).seed != a[0]
    assert fnn.Dropout(0.5, seed=5).seed == 5


@pytest.mark.parametrize("p", [1, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_p_out_of_range(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\)"):
        fnn.Dropout(p)


@pytest.mark.parametrize("p", ["0.5", None, True, [0.5]])
def test_p_wrong_type(p):
    with pytest.raises(TypeError, match="Dropout: p must be a real number"):
        fnn.Dropout(p)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3", True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="Dropout: seed must be an int"):
        fnn.Dropout(0.5, seed=seed)
    d = fnn.Dropout(0.5, seed=0)
    with pytest.raises(ValueError, match="Dropout: seed"):
        d.seed = seed


def test_bad_inputs_name_dropout():
    d = fnn.Dropout(0.5, seed=0)
    with pytest.raises(TypeError, match=r"Dropout\(p=0.5\): input must be a numpy.ndarray"):
        d([[1.0, 2.0]])
    with pytest.raises(TypeError, match=r"Dropout\(p=0.5\).*int64"):
        d(np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"Dropout\(p=0.5\).*0-D"):
        d(np.array(1.0))
    d(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"Dropout\(p=0.5\): grad_out must have the output's "
                                         r"shape \(3, 4\), got \(4, 3\)"):
        d.backward(np.ones((4, 3)))
    with pytest.raises(TypeError, match=r"Dropout\(p=0.5\).*float32"):
        d.backward(np.ones((3, 4), np.float32))
    with pytest.raises(RuntimeError, match=r"Dropout\(p=0.5\): backward\(\) called before"):
        fnn.Dropout(0.5).backward(np.ones((3, 4)))


def test_not_reusable_in_one_container():
    d = fnn.Dropout(0.5, seed=0)
    with pytest.raises(ValueError, match="Dropout at position 2 appears twice"):
        fnn.Sequential(d, fnn.Linear(3, 3), d)(np.ones((2, 3), np.float32))
    g = fnn.Graph()
    x = g.input("x")
    h = g.add(d, x)
    with pytest.raises(ValueError, match="Dropout is already used at node"):
        g.add(d, h)


# ------------------------------------------------------------------- gradients
class FixedMask(fnn.Sequential):
    """A Sequential whose Dropouts apply the training-mode mask of step `step` on every
    forward, also while gradcheck evaluates the function in eval mode (the function must
    not change between its evaluations)."""
    step = 0

    def forward(self, x):
        for m in self.modules():
            if type(m) is fnn.Dropout:
                m.step_count = self.step
                object.__setattr__(m, "training", True)
        return super().forward(x)


def mixed(dt, seed=0, p1=0.3, p2=0.5):
    return [fnn.Linear(7, 12, dtype=dt, rng=seed + 1), fnn.ReLU(), fnn.Dropout(p1, seed=41),
            fnn.Linear(12, 9, dtype=dt, rng=seed + 2), fnn.Dropout(p2, seed=42), fnn.Tanh(),
            fnn.Linear(9, 4, dtype=dt, rng=seed + 3)]


def test_gradcheck_float64_with_a_fixed_mask():
    rng = np.random.default_rng(0)
    model = FixedMask(*mixed(np.float64))
    report = fnn.gradcheck(model, rng.standard_normal((6, 7)))
    assert report, str(report)
    # the mask does drop something, and the gradient honours it
    model(rng.standard_normal((6, 7)))
    kept = np.count_nonzero(model._plan.steps[1].ctx.y)     # the first Dropout's output
    assert 0 < kept < 6 * 12


def test_gradcheck_dropout_alone():
    model = FixedMask(fnn.Dropout(0.4, seed=8))
    model.step = 3
    report = fnn.gradcheck(model, np.random.default_rng(1).standard_normal((5, 9)))
    assert report, str(report)


def _torch_mlp(torch, model):
    """The torch twin of mixed(): Dropout replaced by multiplication with an injected mask
    (torch's own RNG differs), torch's forward as x * mask / (1 - p) -- mask the 0/1 keep
    mask -- scaled as torch.nn.functional.dropout scales."""
    lins = [m for m in model if type(m) is fnn.Linear]
    tl = []
    for lin in lins:
        t = torch.nn.Linear(lin.in_features, lin.out_features, dtype=torch.float64)
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(lin.weight.data))
            t.bias.copy_(torch.from_numpy(lin.bias.data))
        tl.append(t)

    def forward(x, keeps):
        h = torch.relu(tl[0](x))
        h = h * (keeps[0] / (1 - 0.3))
        h = tl[1](h) * (keeps[1] / (1 - 0.5))
        return tl[2](torch.tanh(h))
    return tl, forward


def test_torch_parity_forward_and_every_gradient():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    model = fnn.Sequential(*mixed(np.float64))
    x = rng.standard_normal((16, 7))
    g = rng.standard_normal((16, 4))
    d1, d2 = model[2], model[4]
    keeps = [torch.from_numpy((mask_of(d1, (16, 12), 0) != 0).astype(np.float64)),
             torch.from_numpy((mask_of(d2, (16, 9), 0) != 0).astype(np.float64))]
    tl, tf = _torch_mlp(torch, model)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tf(tx, keeps)
    y = model(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    model.zero_grad()
    gx = model.backward(g)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    lins = [m for m in model if type(m) is fnn.Linear]
    for lin, t in zip(lins, tl):
        np.testing.assert_allclose(lin.weight.grad, t.weight.grad.numpy(), rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(lin.bias.grad, t.bias.grad.numpy(), rtol=1e-12,
                                   atol=1e-14)


def test_torch_parity_10_training_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    model = fnn.Sequential(*mixed(np.float64))
    opt = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tl, tf = _torch_mlp(torch, model)
    topt = torch.optim.SGD([p for t in tl for p in t.parameters()], lr=0.05, momentum=0.9)
    lf, tlf = fnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    d1, d2 = model[2], model[4]
    for step in range(10):
        x = rng.standard_normal((32, 7))
        y = rng.integers(0, 4, 32)
        keeps = [torch.from_numpy((mask_of(d1, (32, 12), step) != 0).astype(np.float64)),
                 torch.from_numpy((mask_of(d2, (32, 9), step) != 0).astype(np.float64))]
        model.zero_grad()
        loss = lf(model(x), y)
        model.backward(lf.backward(), input_grad=False)
        opt.step()
        topt.zero_grad()
        tloss = tlf(tf(torch.from_numpy(x), keeps), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10, abs=1e-12)
    lins = [m for m in model if type(m) is fnn.Linear]
    for lin, t in zip(lins, tl):
        np.testing.assert_allclose(lin.weight.data, t.weight.detach().numpy(), rtol=1e-9,
                                   atol=1e-11)
        np.testing.assert_allclose(lin.bias.data, t.bias.detach().numpy(), rtol=1e-9,
                                   atol=1e-11)


def test_torch_dropout_scaling_matches():
    """torch.nn.functional.dropout's kept values are x / (1 - p), as ours."""
    torch = pytest.importorskip("torch")
    x = torch.ones(200, 300, dtype=torch.float64)
    t = torch.nn.functional.dropout(x, 0.3, training=True).numpy()
    ours = fnn.Dropout(0.3, seed=0)(np.ones((200, 300)))
    assert set(np.unique(t)) == set(np.unique(ours)) == {0.0, 1 / 0.7}


# ------------------------------------------------------------------- compiled step
def _graph(dt):
    g = fnn.Graph()
    x = g.input("x", features=7)
    a = g.add(fnn.Dropout(0.3, seed=51), g.add(fnn.ReLU(), g.add(fnn.Linear(7, 10, dtype=dt,
                                                                            rng=1), x)))
    b = g.add(fnn.Tanh(), g.add(fnn.Linear(7, 10, dtype=dt, rng=2), x))
    s = g.add(fnn.Dropout(0.6, seed=52), g.add(fnn.Add(), a, b))
    g.output(g.add(fnn.Linear(10, 4, dtype=dt, rng=3), s))
    return g


CHAINS = {
    "mixed": lambda dt: fnn.Sequential(*mixed(dt)),
    "dropout_first": lambda dt: fnn.Sequential(fnn.Dropout(0.2, seed=1),
                                               fnn.Linear(7, 8, dtype=dt, rng=1), fnn.Sigmoid(),
                                               fnn.Linear(8, 4, dtype=dt, rng=2)),
    "act_after_dropout": lambda dt: fnn.Sequential(fnn.Linear(7, 8, dtype=dt, rng=1),
                                                   fnn.Dropout(0.5, seed=3), fnn.ReLU(),
                                                   fnn.Linear(8, 4, dtype=dt, rng=2),
                                                   fnn.Dropout(0.1, seed=4)),
    "graph": _graph,
    # 300 x 256 values: the elementwise passes (Dropout's too) run on 2 threads
    "wide": lambda dt: fnn.Sequential(fnn.Linear(7, 256, dtype=dt, rng=1), fnn.ReLU(),
                                      fnn.Dropout(0.5, seed=5),
                                      fnn.Linear(256, 4, dtype=dt, rng=2)),
}


@pytest.mark.parametrize("kind", sorted(CHAINS))
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_compiled_step_bitwise_equals_module_path(kind, dt, threads):
    final = {}
    for nt in (1, 2):
        rng = np.random.default_rng(7)
        fnn.set_num_threads(nt)
        a, b = CHAINS[kind](dt), CHAINS[kind](dt)
        oa = fnn.Adam(a.parameters(), lr=0.01)
        ob = fnn.Adam(b.parameters(), lr=0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step = fnn.compile_step(b, fnn.CrossEntropyLoss(), ob)
        assert step.compiled, step.reason
        lf = fnn.CrossEntropyLoss()
        for i in range(10):
            x = rng.standard_normal((300, 7)).astype(dt)   # 2 threads run the big values
            y = rng.integers(0, 4, 300)
            a.zero_grad()
            la = lf(a(x), y)
            a.backward(lf.backward(), input_grad=False)
            oa.step()
            assert step(x, y) == la, (kind, i)
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert_bitwise_equal(q.data, p.data, f"{kind} {n} threads={nt}")
        da = [m for m in a.modules() if type(m) is fnn.Dropout]
        db = [m for m in b.modules() if type(m) is fnn.Dropout]
        assert [m.step_count for m in da] == [m.step_count for m in db] == [10] * len(da)
        final[nt] = [p.data.copy() for p in b.parameters()]
    for p1, p2 in zip(final[1], final[2]):          # 1 vs 2 threads: bitwise equal
        assert_bitwise_equal(p2, p1)


def test_compiled_and_module_steps_mix():
    dt = np.float64
    rng = np.random.default_rng(8)
    a, b = fnn.Sequential(*mixed(dt)), fnn.Sequential(*mixed(dt))
    oa, ob = fnn.SGD(a.parameters(), lr=0.1), fnn.SGD(b.parameters(), lr=0.1)
    step = fnn.compile_step(b, fnn.MSELoss(), ob)
    lf = fnn.MSELoss()
    for i in range(6):
        x, t = rng.standard_normal((20, 7)), rng.standard_normal((20, 4))
        a.zero_grad()
        lf(a(x), t)
        a.backward(lf.backward(), input_grad=False)
        oa.step()
        if i % 2:
            step(x, t)
        else:                                   # the module path on b
            b.zero_grad()
            lf(b(x), t)
            b.backward(lf.backward(), input_grad=False)
            ob.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert_bitwise_equal(q.data, p.data)


def _fit(model_fn, compiled, seed=0, epochs=2, dt=np.float32):
    rng = np.random.default_rng(9)
    X = rng.standard_normal((200, 7)).astype(dt)
    y = rng.integers(0, 4, 200)
    model = model_fn(dt)
    opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=32, epochs=epochs,
                     seed=seed, progress=False, compiled=compiled)
    hist = tr.fit(X, y)
    return model, hist


@pytest.mark.parametrize("kind", ["mixed", "graph"])
def test_trainer_compiled_epochs_equal_module_path(kind):
    a, ha = _fit(CHAINS[kind], compiled=False)
    b, hb = _fit(CHAINS[kind], compiled=True)
    for p, q in zip(a.parameters(), b.parameters()):
        assert_bitwise_equal(q.data, p.data)
    assert ha.history["loss"] == hb.history["loss"]
    steps = 2 * 7
    assert [m.step_count for m in b.modules() if type(m) is fnn.Dropout] == [steps] * 2


def unseeded(dt):
    return fnn.Sequential(fnn.Linear(7, 16, dtype=dt, rng=1), fnn.ReLU(), fnn.Dropout(0.5),
                          fnn.Linear(16, 4, dtype=dt, rng=2), fnn.Dropout(0.2))


def test_trainer_run_reproduced_by_its_seed():
    fnn.manual_seed(1)
    a, _ = _fit(unseeded, compiled=True, seed=5)
    fnn.manual_seed(2)                   # other drawn seeds: the Trainer re-seeds them
    b, _ = _fit(unseeded, compiled=True, seed=5)
    c, _ = _fit(unseeded, compiled=False, seed=5)
    d, _ = _fit(unseeded, compiled=True, seed=6)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert_bitwise_equal(q.data, p.data)
        assert_bitwise_equal(r.data, p.data)
    assert not all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(),
                                                                  d.parameters()))
    da = [m for m in a.modules() if type(m) is fnn.Dropout]
    assert da[0].seed == D.key(5, 0) and da[1].seed == D.key(5, 1)
    # an explicit seed is kept
    m = fnn.Sequential(fnn.Linear(7, 4, rng=1), fnn.Dropout(0.5, seed=3))
    fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.1), epochs=1,
                progress=False).fit(np.zeros((8, 7), np.float32), np.zeros(8, np.int64))
    assert m[1].seed == 3


# --------------------------------------------------------------- state and save / load
def test_state_dict_holds_seed_and_counter():
    m = fnn.Sequential(fnn.Linear(3, 4, rng=0), fnn.Dropout(0.5, seed=7))
    m(np.ones((2, 3), np.float32))
    m(np.ones((2, 3), np.float32))
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1._extra_state"]
    assert_bitwise_equal(sd["1._extra_state"], np.array([7, 2], np.uint64))
    n = fnn.Sequential(fnn.Linear(3, 4, rng=1), fnn.Dropout(0.5, seed=8))
    n.load_state_dict(sd)
    assert n[1].seed == 7 and n[1].step_count == 2
    bad = dict(sd)
    bad["1._extra_state"] = np.array([1, 2], np.int64)
    with pytest.raises(TypeError, match=r"'1._extra_state' must be a uint64 array of shape"):
        n.load_state_dict(bad)
    bad["1._extra_state"] = np.array([1, 2, 3], np.uint64)
    with pytest.raises(TypeError, match="_extra_state"):
        n.load_state_dict(bad)
    assert n[1].seed == 7                        # unchanged by the failed loads
    missing = {k: v for k, v in sd.items() if k != "1._extra_state"}
    with pytest.raises(KeyError, match="1._extra_state"):
        n.load_state_dict(missing)
    n.load_state_dict(missing, strict=False)


def test_save_load_keeps_p_seed_and_counter(tmp_path):
    mods = mixed(np.float32)
    mods[4] = fnn.Dropout(0.5)                   # a drawn seed
    m = fnn.Sequential(*mods)
    m(np.ones((3, 7), np.float32))
    fnn.save(m, tmp_path / "m.npz")
    r = fnn.load(tmp_path / "m.npz")
    for a, b in ((m[2], r[2]), (m[4], r[4])):
        assert (b.p, b.seed, b.step_count) == (a.p, a.seed, 1)
    assert r[4]._seed_given is False and r[2]._seed_given is True
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    assert_bitwise_equal(r(x), m(x))             # the same next mask


def test_save_load_graph_with_dropout(tmp_path):
    g = _graph(np.float64)
    x = np.random.default_rng(1).standard_normal((6, 7))
    g(x)
    g(x)
    fnn.save(g, tmp_path / "g.npz")
    r = fnn.load(tmp_path / "g.npz")
    assert [k for k in r.state_dict() if k.endswith("_extra_state")] == \
        [k for k in g.state_dict() if k.endswith("_extra_state")]
    for a, b in zip([m for m in g.modules() if type(m) is fnn.Dropout],
                    [m for m in r.modules() if type(m) is fnn.Dropout]):
        assert (b.p, b.seed, b.step_count) == (a.p, a.seed, 2)
    assert_bitwise_equal(r(x), g(x))


def test_checkpoint_resume_continues_the_mask_sequence(tmp_path):
    rng = np.random.default_rng(3)
    data = [(rng.standard_normal((16, 7)), rng.integers(0, 4, 16)) for _ in range(5)]

    def train(model, opt, batches):
        lf = fnn.CrossEntropyLoss()
        for x, y in batches:
            model.zero_grad()
            lf(model(x), y)
            model.backward(lf.backward(), input_grad=False)
            opt.step()
    a = fnn.Sequential(*mixed(np.float64))
    oa = fnn.SGD(a.parameters(), lr=0.1, momentum=0.9)
    train(a, oa, data[:3])
    fnn.save_checkpoint(tmp_path / "c.npz", a, oa, epoch=0)
    train(a, oa, data[3:])
    ck = fnn.load_checkpoint(tmp_path / "c.npz")
    assert ck.model[2].step_count == 3
    train(ck.model, ck.optimizer, data[3:])
    for p, q in zip(a.parameters(), ck.model.parameters()):
        assert_bitwise_equal(q.data, p.data)


# ---------------------------------------------------------- inference and ONNX export
@pytest.mark.parametrize("kind", sorted(CHAINS))
def test_compile_inference_is_the_eval_identity(kind):
    m = CHAINS[kind](np.float64)
    x = np.random.default_rng(0).standard_normal((9, 7))
    f = fnn.compile_inference(m)
    assert f.compiled, f.reason
    assert_bitwise_equal(f(x), m.eval()(x))
    assert_bitwise_equal(m.predict(x), m.eval()(x))
    assert all(d.step_count == 0 for d in m.modules() if type(d) is fnn.Dropout)
    if kind != "graph":
        lins = [c for c in m if type(c) is not fnn.Dropout]
        assert_bitwise_equal(f(x), fnn.Sequential(*lins).eval()(x))


@pytest.mark.parametrize("kind", ["mixed", "graph"])
def test_onnx_export_omits_dropout(tmp_path, kind):
    onnx = pytest.importorskip("onnx")
    import fastnn.onnx
    m = CHAINS[kind](np.float32)
    fnn.onnx.export(m, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert "Dropout" not in [n.op_type for n in model.graph.node]
    r = fnn.onnx.load(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    assert_bitwise_equal(r.eval()(x), m.eval()(x))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(out, m.eval()(x), rtol=1e-5, atol=1e-6)
