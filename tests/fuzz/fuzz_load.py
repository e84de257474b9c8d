"""Fuzz target: fastnn.load and fastnn.load_checkpoint on mutated .npz files.

The first input byte chooses how the rest becomes a file: (0) the raw bytes; (1) a valid
saved model whose JSON metadata is edited by the input (a value replaced, a key dropped, a
number made huge or negative ...), re-zipped, so the CRCs are right and the loader's own
checks are reached; (2) a valid model file with one array replaced by a fuzzed one (shape,
dtype, byte order); (3) a valid file truncated or with bytes flipped.  Every file must load
or raise ValueError / FileNotFoundError / MemoryError -- never anything else."""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

import fastnn as fnn

from ._common import DTYPES, Bug, Bytes, floats

_DIR = tempfile.mkdtemp(prefix="fastnn-fuzz-load-")
_PATH = os.path.join(_DIR, "m.npz")


def models():
    """One saved model of every module type (and containers of them), both dtypes."""
    g = fnn.Graph()
    x = g.input("x", features=4)
    a, b = g.add(fnn.Split([2, 2]), x)
    h = g.add(fnn.Concat(), g.add(fnn.Linear(2, 3, rng=1), a), g.add(fnn.Tanh(), b))
    h = g.add(fnn.Add(), g.add(fnn.Linear(5, 3, rng=2), h), g.add(fnn.Linear(4, 3, rng=3), x))
    h = g.add(fnn.Maximum(), g.add(fnn.Multiply(), h, h), h)
    g.output(g.add(fnn.Linear(3, 2, rng=4), h))
    return [
        fnn.Linear(3, 2, rng=0),
        fnn.Linear(3, 2, bias=False, dtype=np.float64, rng=0),
        fnn.Sequential(fnn.Linear(4, 5, rng=0), fnn.ReLU(), fnn.Linear(5, 3, rng=1),
                       fnn.Sigmoid(), fnn.Linear(3, 2, rng=2), fnn.Tanh(),
                       fnn.Linear(2, 2, rng=3), fnn.LeakyReLU(0.2), fnn.Identity()),
        fnn.Sequential(fnn.Sequential(fnn.Linear(2, 2, rng=0)), fnn.ReLU()),
        g,
    ]


def _bytes_of(model, checkpoint=False):
    fnn.save(model, _PATH) if not checkpoint else fnn.save_checkpoint(
        _PATH, model, fnn.Adam(model.parameters()), epoch=3, best=0.5)
    with open(_PATH, "rb") as f:
        return f.read()


_VALID = None


def valid():
    global _VALID
    if _VALID is None:
        ms = models()
        _VALID = [_bytes_of(m) for m in ms] + [_bytes_of(ms[2], True), _bytes_of(ms[4], True)]
    return _VALID


def _arrays(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {n[:-4]: np.load(io.BytesIO(z.read(n)), allow_pickle=False)
                for n in z.namelist()}


def _zip(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_EDITS = (None, 0, -1, 1, 2**31, 2**63, 1e300, "", "float16", "Linear", "Graph", [], {}, [0, 0],
          [[0, 0]], True, {"type": "Linear", "config": {}})


def _mutate_json(src, obj, depth=0):
    """obj with one fuzzed edit somewhere (recursing into lists and dicts)."""
    if isinstance(obj, dict) and obj and depth < 12:
        keys = sorted(obj)
        k = src.pick(keys)
        r = src.int(0, 9)
        if r == 0:
            return {kk: v for kk, v in obj.items() if kk != k}
        if r == 1:
            return dict(obj, **{k: src.pick(_EDITS)})
        return dict(obj, **{k: _mutate_json(src, obj[k], depth + 1)})
    if isinstance(obj, list) and obj and depth < 12:
        i = src.int(0, len(obj) - 1)
        r = src.int(0, 5)
        if r == 0:
            return obj[:i] + obj[i + 1:]
        if r == 1:
            return obj + [obj[i]]
        return obj[:i] + [_mutate_json(src, obj[i], depth + 1)] + obj[i + 1:]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and src.bool():
        return src.pick((obj + 1, obj - 1, -obj, obj * 1000, 0, 2**31))
    return src.pick(_EDITS)


def make_file(data):
    src = Bytes(data)
    mode = src.int(0, 3)
    if mode == 0:
        return src.rest()
    base = src.pick(valid())
    if mode == 1:
        arrays = _arrays(base)
        meta = json.loads(str(arrays["__fastnn__"][()]))
        for _ in range(src.int(1, 3)):
            meta = _mutate_json(src, meta)
        arrays["__fastnn__"] = np.array(json.dumps(meta) if src.int(0, 7) else
                                        src.rest().decode("utf-8", "replace"))
        return _zip(arrays)
    if mode == 2:
        arrays = _arrays(base)
        k = src.pick(sorted(arrays))
        shape = tuple(src.int(0, 5) for _ in range(src.int(0, 3)))
        dt = np.dtype(src.pick([d for d in DTYPES if d != "object"]))
        a = floats(src, shape, np.float64).astype(dt) if dt.kind != "V" else np.zeros(shape, dt)
        arrays[k] = a
        return _zip(arrays)
    b = bytearray(base)
    if src.bool():
        del b[src.int(0, len(b)):]
    for _ in range(src.int(0, 8)):
        if b:
            b[src.int(0, len(b) - 1)] ^= 1 << src.int(0, 7)
    return bytes(b)


def test_one_input(data):
    blob = make_file(data)
    with open(_PATH, "wb") as f:
        f.write(blob)
    for fn in (fnn.load, fnn.load_checkpoint):
        try:
            r = fn(_PATH)
        except (ValueError, MemoryError) as e:
            if not str(e).startswith(("fastnn.load", "")):
                raise Bug(f"{fn.__name__}: message does not name the caller: {e}")
            continue
        # whatever loads is a working model: it runs forward on its declared input width
        model = r.model if isinstance(r, fnn.Checkpoint) else r
        if not isinstance(model, fnn.Module):
            raise Bug(f"{fn.__name__} returned {type(model).__name__}")
        for p in model.parameters():
            if not p.data.flags.c_contiguous or p.data.dtype not in (np.float32, np.float64):
                raise Bug(f"{fn.__name__}: loaded parameter {p.shape} {p.dtype} is unusable")


def seeds():
    """Valid files as mode-3 inputs (flips of nothing), plus short prefixes for the others."""
    out = [bytes([3, k]) + bytes(8) for k in range(len(valid()))]
    out += [bytes([m, k]) + bytes(16) for m in (1, 2) for k in range(len(valid()))]
    out.append(b"\x00PK\x03\x04" + bytes(30))
    return out
