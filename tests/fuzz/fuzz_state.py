"""Fuzz target: the state-dict loaders -- Module.load_state_dict (strict and not),
SGD / Adam / AdamW / RMSprop.load_state_dict and load_checkpoint into a given model and
optimizer.  A load must either succeed or raise TypeError / ValueError / KeyError and leave
the model and optimizer exactly as they were."""
import numpy as np

import fastnn as fnn

from ._common import DTYPES, Bug, Bytes, call, floats, layout

_BAD = (None, 1, 1.5, "x", [1.0], {}, np.float32(1), True, -1, 2**70, np.nan)


def _value(src, like):
    """A fuzzed stand-in for array `like`: right or wrong shape, dtype, layout, or no array."""
    r = src.int(0, 7)
    if r == 0:
        return src.pick(_BAD)
    shape = like.shape if r > 2 else tuple(src.int(0, 4) for _ in range(src.int(0, 3)))
    dt = like.dtype if r > 4 else np.dtype(src.pick([d for d in DTYPES if d != "object"]))
    a = floats(src, shape, np.float64).astype(dt) if dt.kind in "fc" else np.zeros(shape, dt)
    if r == 7 and a.dtype in (np.float32, np.float64):
        return fnn.Parameter(a)
    return layout(src, a)


def _snapshot(model, opt):
    sd = opt.state_dict()
    return ([p.data.copy() for p in model.parameters()],
            {k: (list(v) if isinstance(v, list) else v) for k, v in sd.items()})


def _same(a, b):
    pa, sa = a
    pb, sb = b
    if any(x.tobytes() != y.tobytes() for x, y in zip(pa, pb)) or set(sa) != set(sb):
        return False
    for k in sa:
        va, vb = sa[k], sb[k]
        if isinstance(va, list):
            if len(va) != len(vb) or any((x is None) != (y is None) or
                                         (x is not None and x.tobytes() != y.tobytes())
                                         for x, y in zip(va, vb)):
                return False
        elif va != vb and not (va != va and vb != vb):
            return False
    return True


def test_one_input(data):
    src = Bytes(data)
    dt = src.pick((np.float32, np.float64))
    model = fnn.Sequential(fnn.Linear(3, 4, dtype=dt, rng=0), fnn.ReLU(),
                           fnn.Linear(4, 2, bias=src.bool(), dtype=dt, rng=1))
    opt = src.pick((lambda p: fnn.SGD(p, lr=0.1, momentum=0.9), lambda p: fnn.Adam(p),
                    lambda p: fnn.AdamW(p, amsgrad=True), lambda p: fnn.RMSprop(p, centered=True)
                    ))(model.parameters())
    # one real step so the optimizer has state
    x = np.ones((2, 3), dt)
    loss = fnn.MSELoss()
    loss(model(x), np.zeros((2, 2), dt))
    model.backward(loss.backward())
    opt.step()
    before = _snapshot(model, opt)

    if src.bool():
        sd = {k: v.copy() for k, v in model.state_dict().items()}
        for _ in range(src.int(0, 3)):
            k = src.pick(sorted(sd) + ["extra", "0.weight"])
            r = src.int(0, 3)
            if r == 0:
                sd.pop(k, None)
            else:
                like = sd.get(k)
                sd[k] = _value(src, like if isinstance(like, np.ndarray) else
                               np.zeros((4, 3), dt))
        if src.int(0, 7) == 0:
            sd = src.pick(_BAD)
        ok, _ = call(model.load_state_dict, sd, strict=src.bool())
    else:
        sd = opt.state_dict()
        for _ in range(src.int(0, 3)):
            k = src.pick(sorted(sd) + ["extra"])
            r = src.int(0, 3)
            if r == 0:
                sd.pop(k, None)
            elif isinstance(sd.get(k), list) and sd[k] and r == 1:
                i = src.int(0, len(sd[k]) - 1)
                ps = list(model.parameters())
                like = ps[i].data if i < len(ps) else x
                sd[k] = sd[k][:i] + [_value(src, like)] + sd[k][i + 1:]
            else:
                sd[k] = src.pick(_BAD + ([],))
        ok, _ = call(opt.load_state_dict, sd)
    if not ok and not _same(before, _snapshot(model, opt)):
        raise Bug("a failed load_state_dict changed the model or the optimizer")
    if ok:
        # the loaded state is usable: one more step runs and gives finite or NaN values,
        # never a crash
        loss(model(x), np.zeros((2, 2), dt))
        model.backward(loss.backward())
        call(opt.step)


def seeds():
    return [bytes([k]) * 32 for k in (0, 1, 2, 3, 5, 8, 13, 255)]
