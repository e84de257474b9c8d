"""The one table of codes (fnn_types.h) as Python sees it, and the build guard."""
import enum
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _reference, ops
from fastnn._kernels import _core
from fastnn._kernels._core import Activation, Engine, GateOp, LossKind, OpKind, OptKind
from fastnn.training import compiled
from _util import ACTIVATIONS, ENGINES

HEADER = os.path.join(os.path.dirname(__file__), os.pardir, "src", "fastnn", "_kernels",
                      "fnn_types.h")
ENUMS = {"fnn_act": Activation, "fnn_engine": Engine, "fnn_gate": GateOp,
         "fnn_loss": LossKind, "fnn_op": OpKind, "fnn_opt": OptKind}


def _header_enums():
    """{tag: {C name: value}} parsed from the typedef enums of fnn_types.h."""
    with open(HEADER) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    out = {}
    for tag, body in re.findall(r"typedef enum (\w+) \{(.*?)\}\s*\1;", text, flags=re.S):
        out[tag] = {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}
    return out


@pytest.mark.parametrize("tag", sorted(ENUMS))
def test_cpdef_enum_is_a_python_int_enum(tag):
    E = ENUMS[tag]
    assert issubclass(E, enum.IntEnum)
    assert E.__module__ == "fastnn._kernels._core"
    assert getattr(_core, E.__name__) is E


@pytest.mark.skipif(not os.path.isfile(HEADER), reason="needs the source tree's fnn_types.h")
@pytest.mark.parametrize("tag", sorted(ENUMS))
def test_enum_values_are_the_header_values(tag):
    table = _header_enums()[tag]
    E = ENUMS[tag]
    prefix = tag.upper() + "_"              # fnn_act -> FNN_ACT_
    expected = {k[len(prefix):]: v for k, v in table.items() if k != "FNN_ACT_EXP_NEG"}
    assert {m.name: int(m) for m in E} == expected


def test_header_has_exactly_the_exposed_tables():
    if not os.path.isfile(HEADER):
        pytest.skip("needs the source tree's fnn_types.h")
    assert set(_header_enums()) == set(ENUMS)


def test_codes_are_distinct_and_dense():
    for E in ENUMS.values():
        codes = sorted(int(m) for m in E)
        if E is Activation:    # 5 is FNN_ACT_EXP_NEG, internal (not an activation)
            codes = sorted(codes + [5])
        assert codes == list(range(len(codes)))


def test_python_tables_are_derived_from_the_enums():
    assert ops.ACTIVATIONS == {a.name.lower(): int(a) for a in Activation}
    assert fnn.ops.ACTIVATIONS is ops.ACTIVATIONS
    assert tuple(_reference.ACTIVATIONS) == tuple(a.name.lower() for a in Activation)
    assert _config._ENGINE_CODES == {e.name.lower(): int(e) for e in Engine}
    assert _config.ENGINES == ENGINES == ("native", "blas")
    assert ACTIVATIONS == ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
                           "gelu_tanh", "silu", "softplus", "elu")
    assert set(compiled._GATE_OPS.values()) == set(GateOp)
    assert set(compiled._LOSS_KINDS.values()) == set(LossKind)
    assert fnn.SGD._kind == OptKind.SGD


def test_layer_and_gate_codes_come_from_the_table():
    for cls, name in ((fnn.Identity, "IDENTITY"), (fnn.ReLU, "RELU"),
                      (fnn.LeakyReLU, "LEAKY_RELU"), (fnn.Sigmoid, "SIGMOID"),
                      (fnn.Tanh, "TANH"), (fnn.GELU, "GELU"), (fnn.SiLU, "SILU"),
                      (fnn.Softplus, "SOFTPLUS"), (fnn.ELU, "ELU")):
        assert cls()._code == Activation[name]
    assert fnn.GELU(approximate="tanh")._code == Activation.GELU_TANH
    assert fnn.Add._op == GateOp.ADD
    assert fnn.Multiply._op == GateOp.MUL
    assert fnn.Maximum._op == GateOp.MAX


@pytest.mark.parametrize("act", list(Activation))
def test_each_activation_code_reaches_the_kernel(act, dtype, rng):
    # the kernel computes what the code names: compare with the NumPy reference by name
    x = rng.standard_normal((7, 9)).astype(dtype)
    name = act.name.lower()
    got = fnn.activation_forward(x, name, negative_slope=0.1)
    ref = _reference.activation(x.astype(np.float64), name, 0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("engine", list(Engine))
def test_each_engine_code_selects_that_engine(engine):
    old = fnn.get_engine()
    try:
        fnn.set_engine(engine.name.lower())
        assert fnn.get_engine() == engine.name.lower()
        assert _core.get_engine_code() == engine
    finally:
        fnn.set_engine(old)


# ---------------------------------------------------------------------------- build guard
def _unbuilt_copy(tmp_path):
    """The package's Python files without its compiled extensions, in a fake source tree."""
    src = os.path.dirname(fnn.__file__)
    root = tmp_path / "tree"
    dst = root / "src" / "fastnn"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c",
                                                           "__pycache__", "*.html"))
    (root / "setup.py").write_text("# stand-in for fastnn's setup.py\n")
    return root


def _import_from(root):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root / "src")
    return subprocess.run([sys.executable, "-c", "import fastnn"], env=env, cwd=str(root),
                          capture_output=True, text=True, timeout=120)


def test_unbuilt_source_tree_says_how_to_build(tmp_path):
    root = _unbuilt_copy(tmp_path)
    r = _import_from(root)
    assert r.returncode != 0
    err = r.stderr
    assert "ImportError: fastnn: the compiled module fastnn._kernels._core cannot be " \
           "imported" in err
    assert "pip install --no-build-isolation -e ." in err
    assert str(root) in err


def test_unbuilt_install_says_reinstall(tmp_path):
    root = _unbuilt_copy(tmp_path)
    os.remove(root / "setup.py")
    r = _import_from(root)
    assert r.returncode != 0
    assert "pip install --force-reinstall fastnn" in r.stderr
