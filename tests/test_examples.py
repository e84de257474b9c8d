"""The example scripts in examples/ run (with --quick) and meet their own correctness goals.

Each script runs in a subprocess from a temporary directory (where its PNGs land), with the
fastnn this test session imports first on PYTHONPATH."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

import fastnn

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def _env():
    env = dict(os.environ)
    # the directory holding the fastnn package this session imported (src/ or site-packages)
    root = str(pathlib.Path(fastnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    return env


def _run(args, cwd, timeout=120):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    return proc, proc.stdout + proc.stderr


def run_example(name, *args, cwd):
    # one thread: quick and steady timings on a loaded machine (several threads competing
    # with other processes for few cores can make the timed loops many times slower)
    proc, out = _run([str(EXAMPLES / name), "--quick", "--threads", "1", *args], cwd)
    assert proc.returncode == 0, f"{name} --quick exited with {proc.returncode}:\n{out}"
    return proc.stdout


def assert_png(path):
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"


def test_two_layer_net(tmp_path):
    out = run_example("two_layer_net.py", cwd=tmp_path)
    assert "OK: the losses agree at every step" in out
    assert "max relative difference over all 200 steps" in out
    for line in ("threads: fastnn 1,", "float64 ", "float32 ", "speed-up", "steps/s"):
        assert line in out, out
    assert "FAIL" not in out


@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed")
def test_digits(tmp_path):
    args = ("--plot", "curves.png") if HAVE_MPL else ()
    out = run_example("digits.py", *args, cwd=tmp_path)
    assert "OK: fastnn test accuracy" in out
    for line in ("fastnn learning curve", "test accuracy", "scikit-learn", "speed-up"):
        assert line in out, out
    if HAVE_MPL:
        assert_png(tmp_path / "curves.png")


def test_spiral(tmp_path):
    out = run_example("spiral.py", cwd=tmp_path)
    assert "OK: training accuracy" in out
    if HAVE_MPL:
        assert "decision boundary saved to spiral.png" in out
        assert_png(tmp_path / "spiral.png")
    else:
        assert "matplotlib is not installed" in out


# run a script with one package made unimportable
_BLOCK = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {mod!r} or name.startswith({mod!r} + "."):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.argv = [{script!r}] + {args!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def _run_without(module, script, args, cwd):
    code = _BLOCK.format(mod=module, script=str(EXAMPLES / script), args=list(args))
    return _run(["-c", code], cwd)


def test_digits_without_sklearn_says_how_to_install(tmp_path):
    proc, out = _run_without("sklearn", "digits.py", ["--quick"], tmp_path)
    assert proc.returncode != 0
    assert "pip install 'fastnn[examples]'" in out, out
    assert "Traceback" not in out, out


def test_spiral_without_matplotlib_skips_the_png(tmp_path):
    proc, out = _run_without("matplotlib", "spiral.py", ["--quick"], tmp_path)
    assert proc.returncode == 0, out
    assert "matplotlib is not installed" in out
    assert "OK: training accuracy" in out
    assert not (tmp_path / "spiral.png").exists()


# ------------------------------------------------------------------ the main job
@pytest.mark.parametrize("data", ["spiral", "digits"])
def test_main_job(tmp_path, data):
    """python -m fastnn --quick trains, reports accuracies and a speed-up against NumPy."""
    if data == "digits" and not HAVE_SKLEARN:
        pytest.skip("scikit-learn is not installed")
    proc, out = _run(["-m", "fastnn", "--quick", "--no-progress", "--threads", "1",
                      "--data", data], tmp_path)
    assert proc.returncode == 0, out
    assert "1 thread(s)" in out
    assert ("scikit-learn digits" if data == "digits" else "CS231n spiral") in out
    line = next(l for l in out.splitlines() if l.startswith("fastnn: final training loss"))
    acc = float(line.rsplit("test accuracy", 1)[1])
    assert acc >= (0.9 if data == "digits" else 0.85), out
    assert "speed-up vs NumPy:" in out
    # the NumPy equivalent trains the same network on the same minibatches
    accs = [float(l.rsplit("test accuracy", 1)[1]) for l in out.splitlines()
            if "us/step" in l]
    assert len(accs) == 2 and abs(accs[0] - accs[1]) <= 0.05, out


def test_typed_api(tmp_path):
    # the script CI type-checks with mypy --strict: it runs and its network learns
    proc, out = _run([str(EXAMPLES / "typed_api.py")], tmp_path)
    assert proc.returncode == 0, out
    acc = float(out.split("accuracy ")[1].split(",")[0])
    assert acc > 0.9, out


HAVE_MYPY = importlib.util.find_spec("mypy") is not None


@pytest.mark.skipif(not HAVE_MYPY, reason="mypy is not installed")
def test_typed_api_passes_mypy_strict(tmp_path):
    # against the fastnn this session imports (src/ or the installed wheel), its py.typed
    # annotations: errors inside fastnn itself are not reported (follow-imports=silent),
    # the example's use of the public API must be clean under --strict
    root = str(pathlib.Path(fastnn.__file__).resolve().parent.parent)
    env = _env()
    env.pop("PYTHONPATH", None)
    if "site-packages" not in root:       # a source tree: show mypy where fastnn is
        env["MYPYPATH"] = root
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                           "--cache-dir", str(tmp_path / "cache"),
                           str(EXAMPLES / "typed_api.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
