"""The benchmark suite (python -m bench): one quick run of the smallest scenario in a
subprocess, checking the JSON it writes and that its correctness cross-check passed (not
speed); and unit tests of its FLOP counting, disturbed-block flags and cross-check."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

import fastnn

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


def test_quick_run_writes_json(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenarios", "tiny", "--threads", "1",
         "--json", str(out), "--no-plot"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
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
    assert sc["crosscheck"]["passed"] is True
    [chk] = sc["crosscheck"]["checks"]
    assert chk["passed"] and chk["threads"] == 1
    assert all(d <= chk["rtol"] for d in chk["max_rel_diff"].values())
    assert chk["max_rel_diff"]["modules"] == 0          # compile_step is bitwise the module path

    [res] = sc["results"]
    assert res["threads"] == 1
    expected = {"compiled", "modules", "numpy"} | ({"torch"} if HAVE_TORCH else set())
    assert set(res["contenders"]) == expected
    for name, r in res["contenders"].items():
        assert r["blocks"] == 3 == len(r["block_us"]) == len(r["cpu_util"]) \
            == len(r["others_cpu"]) == len(r["loadavg1"])
        assert 0 < r["min_us"] <= r["median_us"] <= r["max_us"], name
        assert r["samples_per_s"] == pytest.approx(32 / (r["median_us"] * 1e-6))
        assert r["gflops"] == pytest.approx(sc["flop_per_step"] / (r["median_us"] * 1e3))
        assert r["ratio"] == pytest.approx(r["median_us"]
                                           / res["contenders"]["compiled"]["median_us"])
        assert 0 <= r["disturbed_blocks"] <= r["blocks"]
        assert set(r["disturbed"]) == {"cpu", "load", "any", "over"}
    assert res["contenders"]["compiled"]["ratio"] == 1.0
