"""Reliability (issue 18): interrupts, atomic saves, threads, memory over long runs, and the
regressions found by fuzzing (tests/fuzz).

The soak tests (10**5 compiled steps, 10**4 module-path steps, 10**3 save/load round trips
and model constructions, 1,000 short-lived threads, 4 threads training for 10 s) run only
with FASTNN_SOAK=1:  FASTNN_SOAK=1 pytest -q -m soak tests/test_reliability.py
Scaled-down versions run in the default suite.
"""
import _thread
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastnn as fnn
from fastnn._kernels import step as _ks
from _util import assert_bitwise_equal

SOAK = os.environ.get("FASTNN_SOAK") == "1"


def soak(fn):
    """A soak test: marked `soak` (pytest -m soak) and skipped unless FASTNN_SOAK=1."""
    return pytest.mark.soak(pytest.mark.skipif(
        not SOAK, reason="soak test: set FASTNN_SOAK=1 to run it")(fn))
MiB = 1 << 20


# ------------------------------------------------------------------ models and a replay
def make(dt=np.float32, n_in=16, hidden=32, n_out=4, seed=0):
    return fnn.Sequential(fnn.Linear(n_in, hidden, dtype=dt, rng=seed), fnn.ReLU(),
                          fnn.Linear(hidden, hidden, dtype=dt, rng=seed + 1), fnn.Tanh(),
                          fnn.Linear(hidden, n_out, dtype=dt, rng=seed + 2))


def data(n, dt=np.float32, n_in=16, n_out=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)).astype(dt), rng.integers(0, n_out, n)


def replay(schedule, X, y, bs, seed=0, dt=np.float32, model_seed=0):
    """A fresh model and Adam after the module path's steps: schedule = [(epoch, n_steps)]
    -- the first n_steps batches of that epoch's permutation, as Trainer.fit draws them."""
    model = make(dt, X.shape[1], seed=model_seed)
    opt = fnn.Adam(model.parameters(), lr=1e-3)
    lf = fnn.CrossEntropyLoss()
    perm = np.empty(len(X), np.int64)
    for e, k in schedule:
        _ks.shuffle(perm, seed, e)
        for s in range(k):
            idx = perm[s * bs:(s + 1) * bs]
            model.zero_grad()
            opt.zero_grad()
            lf(model(X[idx]), y[idx])
            model.backward(lf.backward(), input_grad=False)
            opt.step()
    return model, opt


def assert_same_state(model, opt, ref_model, ref_opt):
    assert opt.steps == ref_opt.steps
    for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert_bitwise_equal(p.data, q.data, n)
    a, b = opt.state_dict(), ref_opt.state_dict()
    for key in type(opt)._state_names:
        for u, v in zip(a[key], b[key]):
            assert (u is None) == (v is None), key
            if u is not None:
                assert_bitwise_equal(u, v, key)


def interrupt_after(seconds):
    t = threading.Timer(seconds, _thread.interrupt_main)
    t.start()
    return t


# ------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "module"])
def test_keyboard_interrupt_during_fit(compiled):
    """KeyboardInterrupt from a timer thread during fit: the model (and Adam's state and
    step count) is exactly that of the last completed step, and fit runs again."""
    bs = 32
    X, y = data(4096)
    model = make()
    opt = fnn.Adam(model.parameters(), lr=1e-3)
    tr = fnn.Trainer(model, fnn.CrossEntropyLoss(), opt, batch_size=bs, epochs=10**6,
                     progress=False, compiled=compiled)
    steps = -(-len(X) // bs)
    t = interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(X, y)
    t.join()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    k = opt.steps
    assert k > 0
    full, part = divmod(k, steps)
    if compiled:
        assert part == 0          # an epoch is one compiled call: it completes
    assert tr.epoch == full and len(tr.history) == full
    schedule = [(e, steps) for e in range(full)] + ([(full, part)] if part else [])
    assert_same_state(model, opt, *replay(schedule, X, y, bs))
    # fit again: an interrupted epoch starts again from its first batch
    tr.epochs = 1
    tr.fit(X, y)
    assert tr.epoch == full + 1
    assert_same_state(model, opt, *replay(schedule + [(full, steps)], X, y, bs))


def test_keyboard_interrupt_in_compile_step_loop():
    """An interrupt during the compiled step's nogil call is raised after its bookkeeping:
    the step count and the gradients match the parameters (here the bookkeeping runs
    Python code, where the pending interrupt used to be raised, leaving the step uncounted)."""
    X, y = data(512, n_in=64)
    model = make(n_in=64)
    opt = fnn.Adam(model.parameters(), lr=1e-3)
    lf = fnn.CrossEntropyLoss()
    step = fnn.compile_step(model, lf, opt)
    assert step.compiled
    t = interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        while True:
            step(X, y)
    t.join()
    k = opt.steps
    ref = make(n_in=64)
    ropt = fnn.Adam(ref.parameters(), lr=1e-3)
    for _ in range(k):
        ref.zero_grad()
        lf(ref(X), y)
        ref.backward(lf.backward(), input_grad=False)
        ropt.step()
    assert_same_state(model, opt, ref, ropt)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert_bitwise_equal(p.grad, q.grad, "grad")
    step(X, y)                    # and it goes on
    assert opt.steps == k + 1


def test_deferred_interrupt_outside_main_thread_is_a_no_op():
    from fastnn._interrupts import deferred
    seen = []

    def run():
        with deferred() as d:
            d.check()
            seen.append(signal.getsignal(signal.SIGINT))
    th = threading.Thread(target=run)
    th.start()
    th.join()
    assert seen == [signal.default_int_handler]


# ------------------------------------------------------------------------- atomic save
_CHILD = r"""
import sys, numpy as np, fastnn as fnn
m = fnn.Linear(2048, 4096, dtype=np.float64, rng=1)      # 64 MiB
print("ready", flush=True)
fnn.save(m, sys.argv[1])
print("saved", flush=True)
"""


def test_save_killed_mid_write_leaves_the_old_file(tmp_path):
    """SIGKILL while fnn.save writes a large model: the file at the path is still the old
    model, complete (the write goes to a temporary file renamed over the path at the end)."""
    path = tmp_path / "model.npz"
    old = make()
    fnn.save(old, path)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(fnn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg, os.environ.get("PYTHONPATH", "")]))
    hit = 0
    for attempt in range(5):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            deadline = time.time() + 60
            while time.time() < deadline:
                tmps = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
                if tmps and os.path.getsize(tmp_path / tmps[0]) > MiB:
                    break
                if child.poll() is not None:
                    break
                time.sleep(0.0005)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait()
        loaded = fnn.load(path)
        if isinstance(loaded, fnn.Linear):        # the save finished before the kill
            continue
        hit += 1
        for p, q in zip(loaded.parameters(), old.parameters()):
            assert_bitwise_equal(p.data, q.data)
        break
    assert hit, "the child was never caught in the middle of its write"


# ------------------------------------------------------------------------------ threads
def _train_in_threads(n_threads, seconds=None, epochs=3):
    """n_threads models trained at once (two compiled, two on the module path), then the
    same sequentially: the parameters must be bitwise equal."""
    X, y = data(2048)
    cfgs = [dict(compiled=i % 2 == 0, seed=i) for i in range(n_threads)]

    def trainer(c):
        m = make(seed=10 * c["seed"])
        return fnn.Trainer(m, fnn.CrossEntropyLoss(), fnn.SGD(m.parameters(), lr=0.05,
                                                               momentum=0.9),
                           batch_size=32, epochs=1, seed=c["seed"], progress=False,
                           compiled=c["compiled"])
    trs = [trainer(c) for c in cfgs]
    fits = [0] * n_threads
    errors = []

    def run(i):
        try:
            t0 = time.time()
            while (seconds is not None and time.time() - t0 < seconds) or \
                    (seconds is None and fits[i] < epochs):
                trs[i].fit(X, y)
                fits[i] += 1
        except BaseException as e:      # reported below
            errors.append(e)
    ths = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors, errors
    for c, tr, n in zip(cfgs, trs, fits):
        ref = trainer(c)
        ref.epochs = n
        ref.fit(X, y)
        for p, q in zip(tr.model.parameters(), ref.model.parameters()):
            assert_bitwise_equal(p.data, q.data)
    return fits


def test_threads_train_like_sequential():
    _train_in_threads(4, epochs=2)


@soak
def test_soak_threads_train_like_sequential():
    fits = _train_in_threads(4, seconds=10)
    print(f"\n4 threads, 10 s: {fits} epochs of 64 steps each")


# ------------------------------------------------------------------------ memory soaks
def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def assert_flat(fn, n, warm, label, limit=MiB):
    """fn() n times after `warm` warm-up calls: resident memory (native) and traced Python
    memory each grow by less than `limit`."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc/self/statm (Linux)")
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("RSS means nothing under AddressSanitizer (its quarantine keeps freed "
                    "memory)")
    for _ in range(warm):
        fn()
    gc.collect()
    tracemalloc.start()
    try:
        py0 = tracemalloc.get_traced_memory()[0]
        rss0 = _rss()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        gc.collect()
        py1 = tracemalloc.get_traced_memory()[0]
        rss1 = _rss()
    finally:
        tracemalloc.stop()
    print(f"\n{label}: {n} in {dt:.2f} s (tracemalloc on); RSS {rss0 / MiB:.1f} -> "
          f"{rss1 / MiB:.1f} MiB ({(rss1 - rss0) / 1024:+.0f} KiB), Python "
          f"{(py1 - py0) / 1024:+.1f} KiB")
    assert rss1 - rss0 < limit, f"{label}: RSS grew by {(rss1 - rss0) / MiB:.2f} MiB"
    assert py1 - py0 < limit, f"{label}: Python memory grew by {(py1 - py0) / MiB:.2f} MiB"


def _compiled_step():
    X, y = data(32)
    model = make()
    step = fnn.compile_step(model, fnn.CrossEntropyLoss(), fnn.Adam(model.parameters()))
    assert step.compiled
    return lambda: step(X, y)


def _module_step():
    X, y = data(32)
    model = make()
    opt = fnn.Adam(model.parameters())
    lf = fnn.CrossEntropyLoss()

    def one():
        model.zero_grad()
        lf(model(X), y)
        model.backward(lf.backward(), input_grad=False)
        opt.step()
    return one


def _save_load(tmp_path):
    model = make()
    path = str(tmp_path / "m.npz")

    def one():
        fnn.save(model, path)
        fnn.load(path)
    return one


def _construct():
    return lambda: fnn.Sequential(fnn.Linear(64, 128), fnn.ReLU(), fnn.Linear(128, 10))


def _threads():
    a = np.ones((64, 64), np.float32)

    def one():
        th = threading.Thread(target=fnn.gemm, args=(a, a))
        th.start()
        th.join()
    return one


CASES = {"compiled steps": (_compiled_step, 10**5, 2000),
         "module-path steps": (_module_step, 10**4, 300),
         "save/load round trips": (_save_load, 10**3, 40),
         "model constructions": (_construct, 10**3, 100),
         "short-lived threads calling gemm": (_threads, 10**3, 100)}


@pytest.mark.parametrize("case", list(CASES))
def test_memory_flat(case, tmp_path):
    make_fn, _, quick = CASES[case]
    fn = make_fn(tmp_path) if make_fn is _save_load else make_fn()
    assert_flat(fn, quick, warm=max(20, quick // 10), label=case)


@soak
@pytest.mark.parametrize("case", list(CASES))
def test_soak_memory_flat(case, tmp_path):
    make_fn, n, _ = CASES[case]
    fn = make_fn(tmp_path) if make_fn is _save_load else make_fn()
    assert_flat(fn, n, warm=max(100, n // 20), label=case)


# ------------------------------------------------- regressions found by fuzzing (tests/fuzz)
def _npz(members):
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_load_corrupt_npy_header_is_a_value_error(tmp_path):
    """fuzz_load: a member whose .npy header does not parse made numpy raise
    tokenize.TokenError (not a ValueError) through fastnn.load."""
    header = b"{'descr': ('<f8', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16)
    path = tmp_path / "bad.npz"
    path.write_bytes(_npz({"__fastnn__.npy": npy}))
    for fn in (fnn.load, fnn.load_checkpoint):
        with pytest.raises(ValueError, match=r"fastnn\.load.*not a readable fastnn"):
            fn(path)


def test_load_unknown_compression_is_a_value_error(tmp_path):
    """A zip member with a compression method zipfile does not know raises
    NotImplementedError in zipfile; fastnn.load reports a ValueError."""
    blob = bytearray(_npz({"__fastnn__.npy": b"x" * 40}))
    # the method field of the local header (offset 8) and of the central directory entry
    blob[8:10] = (99).to_bytes(2, "little")
    cd = blob.rfind(b"PK\x01\x02")
    blob[cd + 10:cd + 12] = (99).to_bytes(2, "little")
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="not a readable fastnn model file"):
        fnn.load(path)


def test_load_encrypted_member_is_a_value_error(tmp_path):
    """fuzz_load (under ASan): a member flagged as encrypted makes zipfile raise
    RuntimeError; fastnn.load reports a ValueError."""
    path = tmp_path / "m.npz"
    fnn.save(make(), path)
    blob = bytearray(path.read_bytes())
    blob[6] |= 1                                   # the local header's "encrypted" flag
    cd = blob.find(b"PK\x01\x02")
    while cd >= 0:                                 # and every central directory entry's
        blob[cd + 8] |= 1
        cd = blob.find(b"PK\x01\x02", cd + 4)
    path.write_bytes(bytes(blob))
    for fn in (fnn.load, fnn.load_checkpoint):
        with pytest.raises(ValueError, match="not a readable fastnn"):
            fn(path)


@pytest.mark.parametrize("opt_cls", [fnn.SGD, fnn.Adam])
@pytest.mark.parametrize("steps", [2**70, -1, "3", None, 1.5, True])
def test_optimizer_state_steps_checked_before_anything_changes(opt_cls, steps):
    """fuzz_state: steps=2**70 was accepted and made the next step() raise OverflowError;
    SGD converted steps with int() after its hyperparameters had been replaced."""
    model = make()
    opt = opt_cls(model.parameters(), lr=0.1)
    sd = opt.state_dict()
    before = repr(opt), opt.steps
    bad = dict(sd, steps=steps, lr=0.5)
    with pytest.raises(ValueError, match=r"steps must be an int >= 0 \(at most 2\*\*62\)"):
        opt.load_state_dict(bad)
    assert (repr(opt), opt.steps) == before
    opt.load_state_dict(dict(sd, steps=2**62))
    assert opt.steps == 2**62


def test_activation_of_an_empty_array_with_huge_rows_returns_at_once():
    """fuzz_api: an empty (2**31-1, 0) array made the activation kernels loop over 2**31 rows
    (minutes)."""
    x = np.empty((2**31 - 1, 0), np.float32)
    t0 = time.perf_counter()
    for act in ("relu", "sigmoid"):
        y = fnn.activation_forward(x, act)
        g = fnn.activation_backward(x, x, act)
        assert y.shape == g.shape == x.shape
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(ValueError, match="n_threads"):
        fnn.activation_forward(x, "relu", n_threads=-5)


def test_rowmajor_copies_unaligned_memory():
    """The ASan/UBSan build found the compiled step reading an unaligned float array
    (np.ascontiguousarray keeps unaligned memory as it is): every boundary copy is aligned."""
    from fastnn import _checks
    raw = np.zeros(6 * 4 * 4 + 1, np.uint8)
    u = np.ndarray((6, 4), np.float32, buffer=raw, offset=1)
    u[...] = np.arange(24).reshape(6, 4)
    assert not u.flags.aligned
    r = _checks.rowmajor(u)
    assert r.flags.aligned and r.flags.c_contiguous
    np.testing.assert_array_equal(r, u)


@pytest.mark.xfail(strict=True, reason="known issue (fuzz_api): for batches of <= 2 rows "
                   "gemm_native's matrix-vector path (16-lane dot form) runs only for a "
                   "row-major x, a Fortran-order x goes to the microkernel: other last bits, "
                   "so compile_inference (which copies x to C order) differs from "
                   "model.eval()(x)")
def test_gemm_bits_do_not_depend_on_the_layout_of_x():
    rng = np.random.default_rng(0)
    lin = fnn.Linear(300, 3, rng=0)
    x = rng.standard_normal((2, 300)).astype(np.float32)
    y_f = lin(np.asfortranarray(x)).copy()      # (training mode reuses the output buffer)
    assert_bitwise_equal(y_f, lin(x))


def test_load_graph_record_without_outputs_is_a_value_error(tmp_path):
    """fuzz_load (atheris): a Graph record with an empty "outputs" list made load raise the
    Graph's RuntimeError instead of load's ValueError."""
    import io
    import json
    import zipfile
    path = tmp_path / "g.npz"
    g = fnn.Graph()
    g.output(g.add(fnn.ReLU(), g.input("x", features=3)))
    fnn.save(g, path)
    with zipfile.ZipFile(path) as z:
        meta = json.loads(str(np.load(io.BytesIO(z.read("__fastnn__.npy")))[()]))
    meta["arch"]["outputs"] = []
    np.savez(path, __fastnn__=np.array(json.dumps(meta)))
    with pytest.raises(ValueError, match=r"fastnn\.load.*bad Graph record.*no outputs"):
        fnn.load(path)
