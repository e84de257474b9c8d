"""fastnn.save / fastnn.load: round trips (architecture, parameters, bitwise outputs), the
atomic write, and the errors for unreadable or inconsistent files."""
import io
import json
import os
import pathlib
from collections import OrderedDict

import numpy as np
import pytest

import fastnn as fnn
from _util import assert_bitwise_equal, uniform

ACTIVATIONS = [("Sigmoid", fnn.Sigmoid), ("ReLU", fnn.ReLU), ("Tanh", fnn.Tanh),
               ("LeakyReLU", fnn.LeakyReLU), ("LeakyReLU-0.2", lambda: fnn.LeakyReLU(0.2)),
               ("LeakyReLU--0.1", lambda: fnn.LeakyReLU(-0.1)), ("Identity", fnn.Identity)]
ACT_IDS = [a for a, _ in ACTIVATIONS]


def _mlp(act, dtype, bias=(True, True, True), seed=0):
    return fnn.Sequential(fnn.Linear(7, 12, bias=bias[0], dtype=dtype, rng=seed), act(),
                          fnn.Linear(12, 9, bias=bias[1], dtype=dtype, rng=seed + 1), act(),
                          fnn.Linear(9, 4, bias=bias[2], dtype=dtype, rng=seed + 2))


def _assert_same_model(loaded, model, x=None):
    assert type(loaded) is type(model)
    assert repr(loaded) == repr(model)
    s1, s2 = model.state_dict(), loaded.state_dict()
    assert list(s1) == list(s2)
    for k in s1:
        assert_bitwise_equal(s2[k], s1[k], k)
    # the loaded parameters are not shared with the saved model
    for p, q in zip(model.parameters(), loaded.parameters()):
        assert not np.shares_memory(p.data, q.data)
    if x is not None:
        model_training = model.training
        assert_bitwise_equal(loaded(x).copy(), model(x).copy(), "forward (training mode)")
        assert_bitwise_equal(loaded.eval()(x), model.eval()(x), "forward (eval mode)")
        loaded.train()
        model.train(model_training)


def _files(directory):
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("bias", [(True, True, True), (False, True, False),
                                  (False, False, False)], ids=["bias", "mixed", "nobias"])
@pytest.mark.parametrize("name,act", ACTIVATIONS, ids=ACT_IDS)
def test_round_trip_mlp(name, act, bias, dtype, tmp_path, rng):
    model = _mlp(act, dtype, bias)
    path = tmp_path / "model.npz"
    fnn.save(model, path)
    assert _files(tmp_path) == ["model.npz"]
    loaded = fnn.load(path)
    _assert_same_model(loaded, model, uniform(rng, (5, 7), dtype))
    assert loaded.dtype == np.dtype(dtype)
    for m in loaded:
        if isinstance(m, fnn.Linear):
            assert m.weight.dtype == np.dtype(dtype)


def test_leaky_relu_slope_preserved(tmp_path, rng):
    for slope in (0.2, 0.0, 1e-3, -0.1, 0.1 + 0.2):
        model = fnn.Sequential(fnn.Linear(3, 4, rng=0), fnn.LeakyReLU(slope),
                               fnn.Linear(4, 2, rng=1))
        fnn.save(model, tmp_path / "m.npz")
        loaded = fnn.load(tmp_path / "m.npz")
        assert isinstance(loaded[1], fnn.LeakyReLU)
        assert loaded[1].negative_slope == slope     # exactly, not rounded
        x = uniform(rng, (6, 3), np.float32, -3, 3)
        assert_bitwise_equal(loaded(x), model(x))


@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_linear(bias, dtype, tmp_path, rng):
    lin = fnn.Linear(5, 3, bias=bias, dtype=dtype, rng=4)
    fnn.save(lin, tmp_path / "lin.npz")
    loaded = fnn.load(tmp_path / "lin.npz")
    assert isinstance(loaded, fnn.Linear)
    assert (loaded.bias is None) == (not bias)
    assert loaded.in_features == 5 and loaded.out_features == 3
    _assert_same_model(loaded, lin, uniform(rng, (4, 5), dtype))


@pytest.mark.parametrize("name,act", ACTIVATIONS, ids=ACT_IDS)
def test_round_trip_activation(name, act, tmp_path, rng):
    module = act()
    fnn.save(module, tmp_path / "act.npz")
    loaded = fnn.load(tmp_path / "act.npz")
    assert type(loaded) is type(module)
    assert repr(loaded) == repr(module)
    assert list(loaded.parameters()) == []
    x = uniform(rng, (3, 4), np.float64, -2, 2)
    assert_bitwise_equal(loaded(x), module(x))


def test_round_trip_nested_and_empty_sequential(tmp_path, rng):
    inner = fnn.Sequential(fnn.Linear(4, 6, rng=0), fnn.Tanh())
    model = fnn.Sequential(inner, fnn.Sequential(fnn.Linear(6, 3, rng=1), fnn.ReLU()),
                           fnn.Linear(3, 2, bias=False, rng=2))
    fnn.save(model, tmp_path / "nested.npz")
    loaded = fnn.load(tmp_path / "nested.npz")
    _assert_same_model(loaded, model, uniform(rng, (5, 4), np.float32))
    fnn.save(fnn.Sequential(), tmp_path / "empty.npz")
    assert repr(fnn.load(tmp_path / "empty.npz")) == repr(fnn.Sequential())


def test_round_trip_after_training_and_to(tmp_path, rng):
    """Saved values are the current ones (after SGD steps and a dtype conversion)."""
    model = _mlp(fnn.ReLU, np.float32)
    x = uniform(rng, (8, 7), np.float32)
    t = uniform(rng, (8, 4), np.float32)
    opt = fnn.SGD(model.parameters(), lr=0.1)
    loss = fnn.MSELoss()
    for _ in range(2):
        opt.zero_grad()
        loss(model(x), t)
        model.backward(loss.backward())
        opt.step()
    model.double()
    fnn.save(model, tmp_path / "m.npz")
    loaded = fnn.load(tmp_path / "m.npz")
    assert loaded.dtype == np.float64
    _assert_same_model(loaded, model, x.astype(np.float64))


@pytest.mark.parametrize("kind", ["str", "Path", "PathLike"])
def test_path_types(kind, tmp_path):
    model = _mlp(fnn.Tanh, np.float64)
    p = tmp_path / "model.npz"

    class MyPath:
        def __fspath__(self):
            return str(p)

    arg = {"str": str(p), "Path": pathlib.Path(p), "PathLike": MyPath()}[kind]
    fnn.save(model, arg)
    assert p.is_file()
    _assert_same_model(fnn.load(arg), model)


@pytest.mark.parametrize("name", ["model", "model.bin", "model.npz.old", "weights.NPZ",
                                  "noext."])
def test_written_exactly_at_path(name, tmp_path):
    model = _mlp(fnn.ReLU, np.float32)
    fnn.save(model, tmp_path / name)
    assert _files(tmp_path) == [name]
    _assert_same_model(fnn.load(tmp_path / name), model)
    fnn.save(model, str(tmp_path / name))
    assert _files(tmp_path) == [name]


def test_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _mlp(fnn.Sigmoid, np.float32)
    fnn.save(model, "rel")
    assert _files(tmp_path) == ["rel"]
    _assert_same_model(fnn.load("rel"), model)


def test_save_does_not_change_the_model(tmp_path, rng):
    model = _mlp(fnn.Tanh, np.float64)
    x = uniform(rng, (3, 7), np.float64)
    model(x)
    model.backward(np.ones((3, 4)))
    grads = [p.grad.copy() for p in model.parameters()]
    state = model.state_dict()
    fnn.save(model, tmp_path / "m")
    assert model.training
    for (k, v), p, g in zip(state.items(), model.parameters(), grads):
        assert_bitwise_equal(p.data, v, k)
        assert_bitwise_equal(p.grad, g, k)
    # backward still works after save (the saved forward state was kept)
    model.backward(np.ones((3, 4)))


# ---------------------------------------------------------------- the atomic write
def test_no_temporary_files_remain(tmp_path):
    model = _mlp(fnn.ReLU, np.float32)
    for i in range(3):
        fnn.save(model, tmp_path / f"m{i}.npz")
    assert _files(tmp_path) == ["m0.npz", "m1.npz", "m2.npz"]


def test_save_replaces_existing_file(tmp_path, rng):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old contents " * 1000)
    first = _mlp(fnn.ReLU, np.float32, seed=0)
    fnn.save(first, path)
    _assert_same_model(fnn.load(path), first)
    second = fnn.Sequential(fnn.Linear(2, 2, dtype=np.float64, rng=5))
    fnn.save(second, path)
    assert _files(tmp_path) == ["m.npz"]
    _assert_same_model(fnn.load(path), second)


def test_failed_save_leaves_original(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    original = _mlp(fnn.Tanh, np.float64, seed=3)
    fnn.save(original, path)
    before = path.read_bytes()
    real_savez = np.savez

    def failing_savez(file, *args, **kwds):
        file.write(b"PK\x03\x04 partial zip data" * 100)      # something written first
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        fnn.save(_mlp(fnn.ReLU, np.float32, seed=9), path)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.npz"]
    # a KeyboardInterrupt mid-write is cleaned up too
    def interrupted_savez(file, *args, **kwds):
        file.write(b"xx")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        fnn.save(_mlp(fnn.ReLU, np.float32, seed=9), path)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.npz"]
    monkeypatch.setattr(np, "savez", real_savez)
    _assert_same_model(fnn.load(path), original)


def test_failed_save_to_new_path_leaves_nothing(tmp_path, monkeypatch):
    def failing_savez(file, *args, **kwds):
        raise OSError("simulated")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError):
        fnn.save(_mlp(fnn.ReLU, np.float32), tmp_path / "new.npz")
    assert _files(tmp_path) == []


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        fnn.save(_mlp(fnn.ReLU, np.float32), tmp_path / "no" / "such" / "m.npz")
    assert _files(tmp_path) == []


# ---------------------------------------------------------------- errors
def _valid_file(tmp_path, name="good.npz"):
    path = tmp_path / name
    fnn.save(_mlp(fnn.ReLU, np.float32), path)
    return path


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.1])
def test_truncated_file(fraction, tmp_path):
    good = _valid_file(tmp_path).read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(good[:int(len(good) * fraction)])
    with pytest.raises(ValueError, match="truncated.npz"):
        fnn.load(path)


def test_random_bytes(tmp_path, rng):
    path = tmp_path / "random.npz"
    path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="random.npz"):
        fnn.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz"):
        fnn.load(path)


def test_plain_npz_without_metadata(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, **{k: v for k, v in _mlp(fnn.ReLU, np.float32).state_dict().items()})
    with pytest.raises(ValueError, match="metadata"):
        fnn.load(path)


def test_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="array.npy"):
        fnn.load(path)


def _rewrite(src, dst, change):
    """Copy the npz at src to dst with change(arrays) applied to the dict of arrays."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)


def _set_meta(arrays, **updates):
    meta = json.loads(str(arrays["__fastnn__"][()]))
    meta.update(updates)
    arrays["__fastnn__"] = np.array(json.dumps(meta))


def _param_key(arrays, suffix):
    return next(k for k in arrays if k.endswith(suffix))


@pytest.mark.parametrize("case", ["wrong-shape", "transposed", "wrong-dtype", "missing-param",
                                  "extra-param-listed", "unknown-module", "bad-version",
                                  "bad-format", "not-json", "bad-config"])
def test_inconsistent_file(case, tmp_path):
    good = _valid_file(tmp_path)
    path = tmp_path / "bad.npz"

    def change(a):
        w = _param_key(a, "0.weight")
        if case == "wrong-shape":
            a[w] = np.zeros((12, 8), np.float32)
        elif case == "transposed":
            a[w] = np.ascontiguousarray(a[w].T)
        elif case == "wrong-dtype":
            a[w] = a[w].astype(np.float64)
        elif case == "missing-param":
            del a[_param_key(a, "2.bias")]
        elif case == "extra-param-listed":
            meta = json.loads(str(a["__fastnn__"][()]))
            _set_meta(a, parameters=meta["parameters"] + ["9.weight"])
        elif case == "unknown-module":
            meta = json.loads(str(a["__fastnn__"][()]))
            meta["arch"]["children"][1]["type"] = "NoSuchModule"
            _set_meta(a, arch=meta["arch"])
        elif case == "bad-version":
            _set_meta(a, version=99)
        elif case == "bad-format":
            _set_meta(a, format="something-else")
        elif case == "not-json":
            a["__fastnn__"] = np.array("{not json")
        elif case == "bad-config":
            meta = json.loads(str(a["__fastnn__"][()]))
            meta["arch"]["children"][0]["config"]["in_features"] = -3
            _set_meta(a, arch=meta["arch"])

    _rewrite(good, path, change)
    with pytest.raises(ValueError, match="bad.npz"):
        fnn.load(path)


def test_rewritten_valid_file_still_loads(tmp_path):
    """The manipulation helper itself keeps a valid file valid (so the failures above are
    the manipulations' doing)."""
    good = _valid_file(tmp_path)
    _rewrite(good, tmp_path / "copy.npz", lambda a: None)
    _assert_same_model(fnn.load(tmp_path / "copy.npz"), fnn.load(good))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        fnn.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        fnn.load(str(tmp_path / "nope"))


def test_load_a_directory(tmp_path):
    with pytest.raises((ValueError, IsADirectoryError, PermissionError)):
        fnn.load(tmp_path)


class UserNet(fnn.Module):
    def __init__(self):
        super().__init__()
        self.fc = fnn.Linear(3, 2, rng=0)

    def forward(self, x):
        return self.fc(x)

    def backward(self, g, input_grad=True):
        return self.fc.backward(g, input_grad)


def test_user_module_rejected(tmp_path):
    with pytest.raises(TypeError, match="state_dict"):
        fnn.save(UserNet(), tmp_path / "user.npz")
    with pytest.raises(TypeError, match="state_dict"):
        fnn.save(fnn.Sequential(fnn.Linear(2, 3), UserNet()), tmp_path / "user.npz")
    assert _files(tmp_path) == []


class ScaledLinear(fnn.Linear):
    """A user subclass of a fastnn module: not one of fastnn's own modules."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_user_subclass_of_fastnn_module_rejected(tmp_path):
    """save's docstring: "Only fastnn's own modules (and containers of them) can be saved
    this way"; a subclass with its own forward is user code."""
    with pytest.raises(TypeError, match="state_dict"):
        fnn.save(ScaledLinear(3, 2, rng=0), tmp_path / "sub.npz")
    assert _files(tmp_path) == []


def test_save_non_module(tmp_path):
    for bad in (np.zeros(3), {"w": np.zeros(3)}, None):
        with pytest.raises(TypeError, match="Module"):
            fnn.save(bad, tmp_path / "x.npz")
    assert _files(tmp_path) == []


def test_named_sequential_round_trip(tmp_path, rng):
    """A Sequential built from an OrderedDict of named modules: save succeeds, so load must
    give back a working model (or save must refuse)."""
    model = fnn.Sequential(OrderedDict([("fc1", fnn.Linear(4, 5, rng=0)), ("act", fnn.ReLU()),
                                        ("fc2", fnn.Linear(5, 2, rng=1))]))
    fnn.save(model, tmp_path / "named.npz")
    loaded = fnn.load(tmp_path / "named.npz")
    x = uniform(rng, (3, 4), np.float32)
    assert_bitwise_equal(loaded(x), model(x))


def test_shared_module_round_trip(tmp_path, rng):
    """A Linear used twice in one Sequential (tied weights): either save refuses with a clear
    error, or the file loads into a model computing the same function."""
    lin = fnn.Linear(3, 3, rng=0)
    model = fnn.Sequential(lin, fnn.Tanh(), lin)
    try:
        fnn.save(model, tmp_path / "tied.npz")
    except (TypeError, ValueError):
        return
    loaded = fnn.load(tmp_path / "tied.npz")
    x = uniform(rng, (2, 3), np.float32)
    assert_bitwise_equal(loaded(x), model(x))


# ---------------------------------------------------------------- the loaded model trains
def test_loaded_model_trains(dtype, tmp_path, rng):
    model = _mlp(lambda: fnn.LeakyReLU(0.2), dtype)
    model.eval()
    fnn.save(model, tmp_path / "m.npz")
    loaded = fnn.load(tmp_path / "m.npz")
    assert loaded.training
    assert all(m.training for m in loaded.modules())
    x = uniform(rng, (6, 7), dtype)
    y = rng.integers(0, 4, 6)
    loss = fnn.CrossEntropyLoss()
    opt = fnn.SGD(loaded.parameters(), lr=0.5, momentum=0.9)
    before = [p.data.copy() for p in loaded.parameters()]
    values = []
    for _ in range(5):
        opt.zero_grad()
        values.append(loss(loaded(x), y))
        gx = loaded.backward(loss.backward())
        assert gx.shape == x.shape
        opt.step()
    assert values[-1] < values[0]
    for p, b in zip(loaded.parameters(), before):
        assert not np.array_equal(p.data, b)
        assert np.any(p.grad)
    # the saved model was untouched by training the loaded one
    for p, b in zip(model.parameters(), before):
        assert_bitwise_equal(p.data, b)
