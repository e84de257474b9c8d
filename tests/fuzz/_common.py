"""What the harnesses share: the documented exception types and input decoding helpers."""
import numpy as np

# What fastnn documents for bad input: TypeError / ValueError (KeyError for state_dict
# keys, FileNotFoundError for a missing file, FloatingPointError for a diverging fit),
# MemoryError for a request larger than memory, RuntimeError for calls out of order
# (backward before forward, a training step in eval mode).  Anything else -- and any crash --
# is a bug.
DOCUMENTED = (TypeError, ValueError, KeyError, FileNotFoundError, FloatingPointError,
              MemoryError, RuntimeError)


class Bug(AssertionError):
    """A harness found behaviour fastnn does not document (wrong result, wrong exception)."""


def call(fn, *args, **kwargs):
    """fn(...) -> (True, result) or (False, exception) for a documented exception type;
    anything else propagates (the fuzzer reports it as a crash)."""
    try:
        return True, fn(*args, **kwargs)
    except DOCUMENTED as e:
        if not str(e):
            raise Bug(f"{type(e).__name__} without a message from {fn!r}") from e
        return False, e


class Bytes:
    """A small FuzzedDataProvider (the same role as atheris's, usable without it): reads
    ints, floats and choices from the input bytes, zeros once they run out."""

    def __init__(self, data):
        self.data, self.pos = bytes(data), 0

    def left(self):
        return len(self.data) - self.pos

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b + bytes(n - len(b))

    def int(self, lo, hi):
        """An int in [lo, hi]."""
        span = hi - lo + 1
        nbytes = max(1, (span.bit_length() + 7) // 8)
        return lo + int.from_bytes(self.take(nbytes), "little") % span

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bool(self):
        return bool(self.int(0, 1))

    def rest(self):
        b = self.data[self.pos:]
        self.pos = len(self.data)
        return b


# values that break arithmetic: specials, extremes, subnormals
SPECIALS = (0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-310, -1e-310, 3.4e38, -3.4e38,
            1e308, 1e-45, 65504.0)


def floats(src, shape, dtype):
    """An array of `shape` and `dtype` filled from the input: a mix of ordinary values and
    specials (NaN, inf, subnormals, extremes)."""
    n = int(np.prod(shape)) if len(shape) else 1
    mode = src.int(0, 3)
    if mode == 0:
        a = np.zeros(n)
    elif mode == 1:
        a = np.random.default_rng(src.int(0, 2**16)).standard_normal(n)
    elif mode == 2:
        a = np.random.default_rng(src.int(0, 2**16)).standard_normal(n) * 10.0 ** src.int(-40, 40)
    else:
        a = np.array([src.pick(SPECIALS) if src.int(0, 3) == 0 else src.int(-3, 3) * 0.5
                      for _ in range(min(n, 64))] or [0.0])
        a = np.resize(a, n)
    with np.errstate(over="ignore"):
        return a.astype(dtype).reshape(shape)


DTYPES = ("float32", "float64", ">f4", ">f8", "float16", "int64", "int32", "bool",
          "complex64", "object", "uint8")


def layout(src, a):
    """`a` (or a view with the same values) in a fuzzed memory layout: C order, Fortran order,
    a strided or reversed view, a byte-swapped copy, an unaligned copy, a zero-stride
    broadcast, or read-only."""
    kind = src.int(0, 7)
    if kind == 1 and a.ndim:
        return np.asfortranarray(a)
    if kind == 2 and a.ndim:
        big = np.repeat(a, 2, axis=-1)
        return big[..., ::2]
    if kind == 3 and a.ndim:
        return a[..., ::-1][..., ::-1] if src.bool() else np.flip(np.flip(a, 0), 0)
    if kind == 4:
        return a.astype(a.dtype.newbyteorder())
    if kind == 5 and a.dtype.kind == "f":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if kind == 6 and a.ndim and a.shape[0]:
        return np.broadcast_to(a[:1], a.shape)
    if kind == 7:
        a = a.copy()
        a.flags.writeable = False
    return a


def dims(src, n, big=False):
    """n dimensions: small ones, with 0 and 1 common, and (big) the occasional huge one."""
    out = []
    for _ in range(n):
        r = src.int(0, 15)
        if r < 2:
            out.append(r)                        # 0 or 1
        elif big and r == 15:
            out.append(src.pick((2**31 - 1, 2**31, 2**32 + 1, 2**62)))
        else:
            out.append(src.int(2, 17))
    return tuple(out)
