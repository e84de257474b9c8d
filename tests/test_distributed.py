"""fastnn.distributed: data-parallel training under ``mpiexec -n N`` (tests/_mpi_worker.py),
compared with one process; faults stop the job.  Skipped without mpi4py or mpiexec."""
import importlib.util
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn
import _mpi_worker as W

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_mpi_worker.py")
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
MPIEXEC = shutil.which("mpiexec")
need_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                              reason="needs mpi4py and mpiexec (pip install mpi4py mpich)")


def _env(threads=1):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def launch(n, mode, out, *args, timeout=120, check=True):
    """Run the worker on n ranks; returns (completed process, seconds)."""
    t = time.monotonic()
    cp = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, WORKER, mode, str(out),
                         *map(str, args)], env=_env(), capture_output=True, text=True,
                        timeout=timeout)
    dt = time.monotonic() - t
    if check:
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    return cp, dt


def result(path):
    z = np.load(path)
    k = sum(1 for f in z.files if f.startswith("arr_"))
    return [z[f"arr_{i}"] for i in range(k)], z


def reference(dtype="float64", opt="sgd", bs=32, epochs=2, clip=None, compiled=True,
              early=False):
    """The single-process Trainer the distributed runs must match (rank 0's weights)."""
    dt = np.dtype(dtype)
    model, o = W.build(dt, 7, opt)
    (X, y), val = W.data(dt)
    tr = fastnn.Trainer(model, fastnn.CrossEntropyLoss(), o, batch_size=bs, epochs=epochs,
                        seed=5, progress=False, clip_grad_norm=clip, compiled=compiled)
    hist = tr.fit(X, y, validation_data=val,
                  callbacks=[W.early_stopping()] if early else None)
    return [p.data.copy() for p in model.parameters()], hist


def max_rel(a, b):
    return max(float(np.max(np.abs(u - v) / np.maximum(np.abs(u), 1e-30))) for u, v in zip(a, b))


# ------------------------------------------------------------------ without MPI
def test_public_docstrings_follow_the_convention():
    """fastnn.distributed's public names meet test_api_docs.py's numpydoc rules too."""
    import inspect
    from fastnn import distributed
    from test_api_docs import _documented_names, _params, _section
    for name in distributed.__all__:
        o = getattr(distributed, name)
        doc = inspect.getdoc(o) or ""
        params = [p for p in _params(o) if p.kind is not p.VAR_KEYWORD]
        if params:
            sec = _section(doc, "Parameters")
            assert sec is not None, name
            assert not [p.name for p in params if p.name not in _documented_names(sec)], name
        if not inspect.isclass(o) and inspect.signature(o).return_annotation not in (
                "None", None, inspect.Signature.empty):
            assert _section(doc, "Returns") is not None, name


def test_import_fastnn_never_imports_mpi4py():
    code = ("import sys, fastnn, fastnn.distributed; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    cp = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr


def test_without_mpi4py_a_clear_import_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import fastnn.distributed as d\n"
            "try:\n    d.rank()\nexcept ImportError as e:\n    print('MSG', e)\n")
    cp = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert 'MSG fastnn.distributed needs mpi4py' in cp.stdout
    assert 'pip install "fastnn[mpi]"' in cp.stdout


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_grads_then_step_equals_the_compiled_step(dtype, variant, native, opt, loss):
    """CompiledStep.grads (StepKernel.step(update=False)): forward, loss and backward only --
    the optimizer untouched (no step counted, no state created) -- then optimizer.step()
    equals the one-call compiled step bitwise, every dtype and kernel variant, with the
    correct count of the classification loss."""
    from fastnn.training.compiled import CompiledStep
    rng = np.random.default_rng(3)
    X = rng.standard_normal((19, 6)).astype(dtype)
    y = rng.integers(0, 4, 19) if loss == "xent" else rng.standard_normal((19, 4)).astype(dtype)
    lf = fastnn.CrossEntropyLoss if loss == "xent" else fastnn.MSELoss
    m1, o1 = W.build(dtype, 7, opt)
    m2, o2 = W.build(dtype, 7, opt)
    s1 = fastnn.compile_step(m1, lf(), o1)
    s2 = CompiledStep(m2, lf(), o2)
    assert s1.compiled and s2.compiled
    cnt = np.zeros(1, np.int64)
    for it in range(3):
        a = s1(X, y)
        state = [st for st in o2._state]
        b = s2.grads(X, y, cnt)
        assert o2.steps == it and [st for st in o2._state] == state
        g = [p.grad.copy() for p in m2.parameters()]
        m3, _ = W.build(dtype, 7, opt)
        for p, q in zip(m3.parameters(), m2.parameters()):
            p.data = q.data
        lm = lf()
        lm(m3(X), y)
        m3.backward(lm.backward(), input_grad=False)
        assert all(np.array_equal(p.grad, q) for p, q in zip(m3.parameters(), g))
        if loss == "xent":
            assert cnt[0] == np.count_nonzero(m3(X).argmax(axis=1) == y)
        o2.step()
        assert a == b
    assert all(np.array_equal(p.data, q.data) for p, q in zip(m1.parameters(),
                                                                m2.parameters()))


def test_grads_module_path_and_nonfinite(dtype):
    """A model that does not compile takes the module path of grads; a non-finite loss
    skips backward (the gradients read as zero) on both paths."""
    from fastnn.training.compiled import CompiledStep
    X = np.ones((4, 6), dtype)
    y = np.array([0, 1, 2, 3])
    for mk in (lambda: W.build(dtype, 7, "sgd"),
               lambda: (lambda m: (m, fastnn.SGD(m.parameters(), lr=0.1)))(
                   fastnn.Sequential(fastnn.Linear(6, 4), fastnn.ReLU(), fastnn.ReLU())
                   .to(dtype))):
        m, o = mk()
        for p in m.parameters():      # positive: the ReLUs pass, the gradients are not 0
            p.data = np.linspace(0.1, 0.5, p.size).reshape(p.shape)
        st = CompiledStep(m, fastnn.CrossEntropyLoss(), o, warn=False)
        loss = st.grads(X, y)
        assert np.isfinite(loss) and any(np.any(p.grad != 0) for p in m.parameters())
        m[0].weight.data[0, 0] = np.nan
        assert not np.isfinite(st.grads(X, y))
        assert all(not np.any(p.grad) for p in m.parameters())


def test_grad_buffer_views_and_replanning(dtype):
    """GradBuffer: every gradient becomes a view into one flat buffer (its value kept, a
    shared parameter once); a compiled step planned before re-plans and writes there."""
    from fastnn.distributed import GradBuffer
    X = np.random.default_rng(0).standard_normal((9, 6)).astype(dtype)
    y = np.arange(9) % 4
    m1, o1 = W.build(dtype, 7, "sgd")
    m2, o2 = W.build(dtype, 7, "sgd")
    s1, s2 = fastnn.compile_step(m1, fastnn.CrossEntropyLoss(), o1), \
        fastnn.compile_step(m2, fastnn.CrossEntropyLoss(), o2)
    s1(X, y)
    s2(X, y)
    before = [p.grad.copy() for p in m2.parameters()]
    gb = GradBuffer(list(m2.parameters()))
    (buf,) = gb.buffers.values()
    assert buf.dtype == dtype and buf.size == sum(p.size for p in m2.parameters())
    assert gb.bound() and all(np.shares_memory(p.grad, buf) for p in m2.parameters())
    assert all(np.array_equal(p.grad, g) for p, g in zip(m2.parameters(), before))
    s1(X, y)
    s2(X, y)
    assert s2.compiled
    assert all(np.array_equal(p.grad, q.grad) and np.array_equal(p.data, q.data)
               for p, q in zip(m1.parameters(), m2.parameters()))
    assert not np.array_equal(buf, np.concatenate([g.ravel() for g in before]))
    m2.to(np.float64 if dtype == np.float32 else np.float32)
    assert not gb.bound()


# ------------------------------------------------------------------ under mpiexec
@need_mpi
@pytest.mark.parametrize("n", [1, 2])
def test_broadcast_and_allreduce(tmp_path, n):
    launch(n, "prims", tmp_path / "p.npz")
    z = np.load(tmp_path / "p.npz")
    assert int(z["world"]) == n
    assert z["ok"].tolist() == [True] * 5 and int(z["allok"]) == 1


@need_mpi
@pytest.mark.parametrize("n,opt,extra", [(1, "sgd", ()), (2, "sgd", ()), (2, "adam", ()),
                                         (2, "sgd", ("--clip", 0.5)),
                                         (2, "adam", ("--compiled", 0)),
                                         (2, "sgd", ("--early", 1, "--epochs", 4))],
                         ids=["1-sgd", "2-sgd", "2-adam", "2-sgd-clip", "2-adam-module",
                              "2-sgd-early-stopping"])
def test_ranks_equal_one_process_float64(tmp_path, n, opt, extra):
    """N ranks with global batch 32 (203 rows: the last batch of 11 splits 5/6) give the
    parameters of one process with batch 32 to 1e-12 (1 rank: bitwise), the same reduced
    loss / accuracy / validation metrics, and identical parameters on every rank."""
    launch(n, "train", tmp_path / "t.npz", "--opt", opt, *extra)
    got, z = result(tmp_path / "t.npz")
    clip = float(extra[1]) if extra and extra[0] == "--clip" else None
    early = "--early" in extra
    want, hist = reference(opt=opt, clip=clip, compiled="--compiled" not in extra,
                           epochs=4 if early else 2, early=early)
    assert bool(z["same"]) and int(z["world"]) == n
    if n == 1:
        assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert max_rel(want, got) <= 1e-12
    assert not all(np.array_equal(a, b) for a, b in zip(want, W.build(np.float64, 7, opt)[0]
                                                        .parameters()))   # it trained
    np.testing.assert_allclose(z["h_loss"], hist["loss"], rtol=1e-12)
    np.testing.assert_allclose(z["h_val_loss"], hist["val_loss"], rtol=1e-12)
    np.testing.assert_array_equal(z["h_accuracy"], hist["accuracy"])
    np.testing.assert_array_equal(z["h_val_accuracy"], hist["val_accuracy"])
    assert z["epochs"].tolist() == [1, 2]      # early stopping: 2 of 4 epochs, all ranks


@need_mpi
def test_ranks_with_different_data_are_refused(tmp_path):
    cp, _ = launch(2, "mismatch", tmp_path / "m.npz", check=False)
    assert cp.returncode != 0 and not (tmp_path / "m.npz").exists()
    assert "DistributedTrainer.fit: the ranks disagree on (n samples, features" in cp.stderr


@need_mpi
def test_ranks_equal_one_process_float32(tmp_path):
    launch(2, "train", tmp_path / "t.npz", "--dtype", "float32", "--opt", "adam")
    got, z = result(tmp_path / "t.npz")
    want, hist = reference(dtype="float32", opt="adam")
    assert bool(z["same"]) and got[0].dtype == np.float32
    assert max_rel(want, got) <= 1e-4
    np.testing.assert_allclose(z["h_loss"], hist["loss"], rtol=1e-5)


@need_mpi
def test_exact_mode_bitwise_for_any_ranks_and_threads(tmp_path):
    """exact=True: 1, 2 and 3 ranks (3: unequal chunk shares; the last batch of 11 rows
    has 2 chunks of 8, so one rank has none) and 2 threads per rank give bitwise the same
    parameters; the exact sum order stays within 1e-12 of the plain single process."""
    runs = {}
    for n, threads in ((1, 1), (2, 1), (3, 1), (2, 2)):
        out = tmp_path / f"e{n}{threads}.npz"
        launch(n, "train", out, "--exact", 1, "--opt", "adam", "--chunk", 8,
               "--threads", threads)
        runs[n, threads] = result(out)
    base, z1 = runs[1, 1]
    for key, (got, z) in runs.items():
        assert bool(z["same"]), key
        assert all(np.array_equal(a, b) for a, b in zip(base, got)), key
    want, _ = reference(opt="adam")
    assert max_rel(want, base) <= 1e-12


@need_mpi
def test_checkpoint_resume_on_another_number_of_ranks(tmp_path):
    """1 epoch on 2 ranks writing a checkpoint, then 2 more epochs resumed on 3 ranks ==
    3 epochs on 1 rank, bitwise (exact=True), Adam's state included; the history goes on."""
    ck = tmp_path / "ck.npz"
    common = ("--exact", 1, "--opt", "adam", "--chunk", 8)
    launch(2, "train", tmp_path / "a.npz", *common, "--epochs", 1, "--checkpoint", ck)
    assert ck.exists() and sorted(os.listdir(tmp_path)) == ["a.npz", "ck.npz"]
    assert fastnn.load_checkpoint(ck).epoch == 1
    launch(3, "train", tmp_path / "b.npz", *common, "--epochs", 2, "--resume", ck)
    launch(1, "train", tmp_path / "c.npz", *common, "--epochs", 3)
    (got, zb), (want, zc) = result(tmp_path / "b.npz"), result(tmp_path / "c.npz")
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert zb["epochs"].tolist() == [1, 2, 3] == zc["epochs"].tolist()
    np.testing.assert_allclose(zb["h_loss"], zc["h_loss"], rtol=1e-12)


@need_mpi
@pytest.mark.parametrize("mode", ["raise", "hang", "die"])
def test_a_failing_rank_stops_the_job(tmp_path, mode):
    """Rank 1 raises / hangs / exits at its third step: the job exits non-zero well within
    the test's limit instead of hanging (hang: rank 0's collective times out after 3 s)."""
    cp, dt = launch(2, mode, tmp_path / "f.npz", "--timeout", 3, timeout=90, check=False)
    assert cp.returncode != 0
    assert dt < 60
    assert not (tmp_path / "f.npz").exists()
    if mode == "raise":
        assert "rank 1 fails on purpose" in cp.stderr
        assert "uncaught exception on rank 1 of 2" in cp.stderr
    if mode == "hang":
        assert "did not complete within 3 s" in cp.stderr
