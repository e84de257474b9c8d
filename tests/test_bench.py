"""The benchmarks (python -m bench, python -m bench.gemm): quick runs of the smallest
scenario and of the residual-MLP scenario (a compiled fastnn.Graph) in a subprocess,
checking the JSON they write and that their correctness cross-checks passed (not speed);
a quick GEMM benchmark run; unit tests of the FLOP counting, disturbed-block flags and
cross-check; the NumPy twins (fastnn._reference) against fastnn in float64; and no script
edits sys.path."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

import numpy as np

import fastnn
from fastnn._reference import NumpyMLP, NumpyResidualMLP

ROOT = pathlib.Path(__file__).resolve().parent.parent
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _load_run():
    spec = importlib.util.spec_from_file_location("_bench_run", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def brun():
    return _load_run()


def _env():
    env = dict(os.environ)
    # the directory holding the fastnn package this session imported (src/ or site-packages)
    src = str(pathlib.Path(fastnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    return env


def _run_bench(args, timeout=180):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    return proc, log


def test_step_flops(brun):
    f = brun.step_flops
    # CS231n 64x1000-100-10: forward + grad_W of layer 1, forward + grad_W + grad_x of layer 2
    assert f((1000, 100, 10), 64) == 2 * (2 * 64 * 100 * 1000) + 3 * (2 * 64 * 10 * 100)
    assert f((1000, 100, 10), 64) == 25_984_000
    assert f((1000, 100, 10), 64, input_grad=True) == 3 * (2 * 64 * 100 * 1000) \
        + 3 * (2 * 64 * 10 * 100)
    # one layer: forward and grad_W only
    assert f((5, 3), 7) == 2 * (2 * 7 * 3 * 5)
    # 2-64-64-3, batch 32
    assert f((2, 64, 64, 3), 32) == 2 * 2 * 32 * 64 * 2 + 3 * 2 * 32 * 64 * 64 \
        + 3 * 2 * 32 * 3 * 64
    # linear in the batch size (the digits fit counts samples x per-sample FLOPs)
    assert f((784, 512, 512, 10), 128) == 128 * f((784, 512, 512, 10), 1)
    sc = brun.StepScenario("t", "tiny", "t", (2, 64, 64, 3), 32, "float32", "relu", "ce",
                           True, 1e-2, "uniform", 1)
    assert sc.flop == f((2, 64, 64, 3), 32)


def test_disturbed_flags(brun):
    rec = {"cpu_util": [1.0, 0.5, 0.98, 1.9, 1.2, 1.0],
           "others_cpu": [0.0, 0.0, 0.0, 0.1, 1.1, None],
           "loadavg1": [0.5, 0.5, 3.0, 1.0, None, 0.0]}
    # 1 thread on 2 cores: our utilisation below 0.9 (block 2); load above 2 (block 3);
    # others may use the free core (block 5 is fine); 1.9 > 1 + 0.5 counted apart
    assert brun._flag_blocks(rec, 1, 2) == {"cpu": 1, "load": 1, "any": 2, "over": 1}
    # 2 threads on 2 cores: others above 0.25 cores now disturb too (block 5)
    assert brun._flag_blocks(rec, 2, 2) == {"cpu": 2, "load": 1, "any": 3, "over": 0}


def test_crosscheck_rejects_disagreeing_losses(brun):
    sc = brun.StepScenario("t", "tiny", "t", (2, 4, 3), 8, "float64", "relu", "ce", True,
                           1e-2, "uniform", 1)
    ok = sc.crosscheck({"compiled": lambda: 1.0, "numpy": lambda: 1.0 + 1e-9})
    assert ok["passed"] and ok["message"] is None
    bad = sc.crosscheck({"compiled": lambda: 1.0, "numpy": lambda: 1.001})
    assert not bad["passed"]
    assert "numpy" in bad["message"] and "rtol" in bad["message"]
    nan = sc.crosscheck({"compiled": lambda: 1.0, "numpy": lambda: float("nan")})
    assert not nan["passed"]


def assert_step_entry(sc, torch_forms=()):
    """A step scenario's JSON entry from a quick run on one thread: cross-check passed
    (compiled bitwise the module path), 3 blocks per contender, consistent numbers.
    torch_forms: the extra torch contenders the scenario may add (torch-foreach, ...)."""
    assert sc["crosscheck"]["passed"] is True
    [chk] = sc["crosscheck"]["checks"]
    assert chk["passed"] and chk["threads"] == 1
    assert all(d <= chk["rtol"] for d in chk["max_rel_diff"].values())
    assert chk["max_rel_diff"]["modules"] == 0          # compile_step is bitwise the module path

    [res] = sc["results"]
    assert res["threads"] == 1
    expected = {"compiled", "modules", "numpy"} | ({"torch"} if HAVE_TORCH else set())
    assert expected <= set(res["contenders"]) <= expected | set(torch_forms)
    for name, r in res["contenders"].items():
        assert r["blocks"] == 3 == len(r["block_us"]) == len(r["cpu_util"]) \
            == len(r["others_cpu"]) == len(r["loadavg1"])
        assert 0 < r["min_us"] <= r["median_us"] <= r["max_us"], name
        assert r["samples_per_s"] == pytest.approx(sc["batch"] / (r["median_us"] * 1e-6))
        assert r["gflops"] == pytest.approx(sc["flop_per_step"] / (r["median_us"] * 1e3))
        assert r["ratio"] == pytest.approx(r["median_us"]
                                           / res["contenders"]["compiled"]["median_us"])
        assert 0 <= r["disturbed_blocks"] <= r["blocks"]
        assert set(r["disturbed"]) == {"cpu", "load", "any", "over"}
    assert res["contenders"]["compiled"]["ratio"] == 1.0


def test_quick_run_writes_json(tmp_path):
    out = tmp_path / "r.json"
    proc, log = _run_bench(["bench", "--quick", "--scenarios", "tiny", "--threads", "1",
                            "--json", str(out), "--no-plot"])
    assert "cross-check OK" in proc.stdout, log
    assert not (tmp_path / "r.png").exists()          # --no-plot
    doc = json.loads(out.read_text())

    m = doc["machine"]
    for key in ("cpu", "cores", "versions", "fastnn_config", "loadavg_start", "loadavg_end"):
        assert key in m, key
    assert m["versions"]["fastnn"] == fastnn.__version__
    assert m["versions"]["numpy"]
    assert "kernel_variant" in m["fastnn_config"]
    assert doc["quick"] is True and doc["ok"] is True
    assert doc["method"]["threads"] == [1]
    assert "2*M*N*K" in doc["method"]["flop_convention"]

    assert [e["key"] for e in doc["scenarios"]] == ["tiny"]
    sc = doc["scenarios"][0]
    assert sc["kind"] == "step" and sc["batch"] == 32 and sc["sizes"] == [2, 64, 64, 3]
    assert_step_entry(sc)


def test_quick_residual_scenario(tmp_path, brun):
    out = tmp_path / "res.json"
    proc, log = _run_bench(["bench", "--quick", "--scenarios", "residual", "--threads", "1",
                            "--json", str(out), "--no-plot"])
    assert "cross-check OK" in proc.stdout, log
    assert "MFLOP/step" in proc.stdout, log
    doc = json.loads(out.read_text())
    assert doc["ok"] is True
    [sc] = doc["scenarios"]
    assert sc["key"] == "residual" and sc["kind"] == "step" and sc["model"] == "fastnn.Graph"
    assert sc["compiled"] is True                       # the Graph compiled into one call
    assert sc["blocks"] == 2 and sc["width"] == 128 and sc["batch"] == 64
    assert sc["sizes"] == [64, 128, 128, 128, 128, 128, 10]
    assert sc["dtype"] == "float32" and sc["lr"] == 0.05 and sc["momentum"] == 0.9
    assert sc["flop_per_step"] == brun.step_flops(sc["sizes"], 64)
    assert_step_entry(sc)                               # the Graph's module path bitwise


@pytest.mark.parametrize("key", ["tiny", "residual"])
def test_numpy_twins_match_fastnn_float64(brun, key):
    """The NumPy contenders (NumpyMLP, NumpyResidualMLP) take the same steps as fastnn's
    module path, to rounding, in float64 -- with momentum, for several steps."""
    if key == "tiny":
        sc = brun.StepScenario("t", "tiny", "t", (2, 16, 16, 3), 8, "float64", "relu", "ce",
                               True, 0.1, "uniform", 1, check_steps=6, momentum=0.9)
        twin = NumpyMLP
    else:
        sc = brun.ResidualScenario("r", "r", 5, 12, 3, 4, 16, "float64", 0.1, 0.9, 2)
        sc.check_steps = 6
        twin = NumpyResidualMLP
    assert sc.numpy_twin is twin
    x, y, weights = sc.problem()
    model = sc.fastnn_model(weights)
    net = twin(weights, sc.lr, sc.momentum)
    step = fastnn.compile_step(model, sc.fastnn_loss(), sc.sgd(model))
    assert step.compiled, step.reason
    for _ in range(6):
        np.testing.assert_allclose(net.step(x, y), step(x, y), rtol=1e-12)
    for p, q in zip(net.params(), model.parameters()):
        np.testing.assert_allclose(p, q.data.T if p.ndim == 2 else q.data, rtol=1e-10,
                                   atol=1e-13)


def test_quick_adam_scenario(tmp_path):
    out = tmp_path / "adam.json"
    proc, log = _run_bench(["bench", "--quick", "--scenarios", "adam", "--threads", "1",
                            "--json", str(out), "--no-plot"], timeout=300)
    assert proc.stdout.count("cross-check OK") == 2, log
    doc = json.loads(out.read_text())
    assert doc["ok"] is True
    assert [e["key"] for e in doc["scenarios"]] == ["adam-tiny", "adam-mnist-b128"]
    for sc in doc["scenarios"]:
        assert sc["group"] == "adam" and sc["lr"] == 1e-3 and sc["compiled"] is True
        assert_step_entry(sc, torch_forms=("torch-foreach", "torch-fused"))


def test_numpy_adam_twin_matches_fastnn_float64(brun):
    """NumpyAdamMLP takes the same Adam steps as fastnn's compiled step, to rounding."""
    from fastnn._reference import NumpyAdamMLP
    sc = brun.AdamScenario("a", "adam", "a", (3, 16, 16, 4), 8, "float64", "relu", "ce",
                           True, 1e-2, "uniform", 1)
    x, y, weights = sc.problem()
    model = sc.fastnn_model(weights)
    net = NumpyAdamMLP(weights, sc.lr)
    step = fastnn.compile_step(model, sc.fastnn_loss(), sc.sgd(model))
    assert step.compiled and type(sc.sgd(model)) is fastnn.Adam
    for _ in range(6):
        np.testing.assert_allclose(net.step(x, y), step(x, y), rtol=1e-12)
    for p, q in zip(net.params(), model.parameters()):
        np.testing.assert_allclose(p, q.data.T if p.ndim == 2 else q.data, rtol=1e-9,
                                   atol=1e-12)


def test_optimizer_update_benchmark(tmp_path):
    out = tmp_path / "optim.json"
    proc, log = _run_bench(["bench.optim", "--threads", "1", "--blocks", "1", "--json",
                            str(out)], timeout=120)
    doc = json.loads(out.read_text())
    res = doc["results"]["1"]
    assert {"fastnn SGD", "fastnn Adam", "fastnn AdamW", "fastnn RMSprop"} <= set(res)
    assert res["fastnn SGD"]["ratio_to_fastnn_sgd"] == 1.0
    assert all(r["median_us"] > 0 for r in res.values())


def test_numpy_residual_mlp_checks_its_weights():
    W = np.zeros((3, 3))
    with pytest.raises(ValueError, match="stem, two per block and the head"):
        NumpyResidualMLP([(W, None)] * 3, 0.1)


def test_quick_gemm_benchmark(tmp_path):
    out = tmp_path / "gemm.json"
    proc, log = _run_bench(["bench.gemm", "--quick", "--dtype", "float32", "--threads", "1",
                            "--blocks", "1", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert doc["machine"]["fastnn"] == fastnn.__version__ and doc["machine"]["cpu"]
    rows = doc["results"]
    assert [(r["M"], r["K"], r["N"]) for r in rows] == [(64, 1000, 100), (128, 784, 512),
                                                        (512, 512, 512)]
    for r in rows:
        assert r["dtype"] == "float32" and r["threads"] == 1
        peers = {"blis"} if importlib.util.find_spec("blis") else set()
        assert set(r["gflops"]) == {"numpy", "native", "blas", "native+bias+sigmoid",
                                    "fma-ceiling"} | peers
        assert all(g > 0 for g in r["gflops"].values())
        assert r["ratio_vs_numpy"]["numpy"] == 1.0
        # the FMA ceiling: no product can beat it (2x: per-call noise on a busy host)
        assert 0 < r["pct_of_fma_ceiling"]["native"] < 200
        assert "fma-ceiling" not in r["ratio_vs_numpy"]
    assert doc["machine"]["numpy_blas"] and "blis" in doc["machine"]


def test_bench_step_runs_as_a_module():
    proc, log = _run_bench(["bench.step", "--help"], timeout=60)
    assert "--scenarios" in proc.stdout, log


def test_no_script_edits_sys_path():
    scripts = [*(ROOT / "bench").glob("*.py"), *(ROOT / "examples").glob("*.py"),
               *(ROOT / "src" / "fastnn").rglob("*.py")]
    assert len(scripts) > 10
    offenders = [str(p.relative_to(ROOT)) for p in scripts
                 if any(f"sys.path.{m}" in p.read_text() for m in ("insert", "append",
                                                                    "extend"))]
    assert not offenders, f"these scripts edit sys.path: {offenders}"


def test_quick_inference_scenarios(tmp_path):
    out = tmp_path / "inf.json"
    proc, log = _run_bench(["bench", "--quick", "--scenarios", "inference", "--threads", "1",
                            "--blocks", "1", "--json", str(out), "--no-plot"])
    assert "cross-check OK (the outputs" in proc.stdout, log
    assert "µs/call" in proc.stdout, log
    doc = json.loads(out.read_text())
    assert doc["ok"] is True
    keys = [e["key"] for e in doc["scenarios"]]
    assert keys == ["infer-tiny-b1", "infer-tiny-b32", "infer-mnist-b1", "infer-mnist-b32"]
    for sc in doc["scenarios"]:
        assert sc["kind"] == "inference" and sc["compiled"] is True
        assert sc["crosscheck"]["passed"] is True
        [r] = sc["results"]
        names = set(r["contenders"])
        assert {"compiled", "numpy"} <= names
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            assert "onnxruntime" in names
        if HAVE_TORCH:
            assert "torch" in names
        assert r["contenders"]["compiled"]["ratio"] == 1.0


def test_inference_is_not_a_default_scenario(brun):
    assert "inference" in brun.GROUPS and "inference" in brun.OPT_IN


def test_numpy_modern_twin_matches_fastnn_float64(brun):
    """NumpyModernMLP (LayerNorm, GELU, Dropout with fastnn's masks, AdamW) takes the same
    steps as fastnn's compiled step, to rounding, in float64."""
    from fastnn._reference import NumpyModernMLP
    sc = brun.ModernScenario("m", "m", (6, 16, 12, 4), 8, "float64", 1e-2, 0.25, 3)
    assert sc.numpy_twin is NumpyModernMLP
    x, y, weights = sc.problem()
    model = sc.fastnn_model(weights)
    net = NumpyModernMLP(weights, sc._norms(), sc.drop_seeds, sc.p, sc.lr)
    step = fastnn.compile_step(model, sc.fastnn_loss(), sc.sgd(model))
    assert step.compiled, step.reason
    assert type(sc.sgd(model)) is fastnn.AdamW
    for _ in range(6):
        np.testing.assert_allclose(net.step(x, y), step(x, y), rtol=1e-11)
    for p, q in zip(net.params(), model.parameters()):
        np.testing.assert_allclose(p, q.data.T if p.ndim == 2 else q.data, rtol=1e-8,
                                   atol=1e-11)


def test_quick_modern_scenario(tmp_path):
    out = tmp_path / "modern.json"
    proc, log = _run_bench(["bench", "--quick", "--scenarios", "modern", "--threads", "1",
                            "--json", str(out), "--no-plot"], timeout=300)
    assert proc.stdout.count("cross-check OK") == 1, log
    doc = json.loads(out.read_text())
    assert doc["ok"] is True
    [sc] = doc["scenarios"]
    assert sc["key"] == "modern-b128" and sc["optimizer"] == "AdamW" and sc["dropout"] == 0.1
    assert sc["compiled"] is True
    names = set(sc["results"][0]["contenders"])
    assert {"compiled", "modules", "numpy"} <= names
