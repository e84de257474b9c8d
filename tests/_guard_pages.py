"""Run by test_memory_bounds.py in a fresh interpreter: every operand and output of the
kernels is placed flush against an inaccessible page (right after its last byte, or right
before its first), so a kernel that reads or writes even one element out of bounds dies
with SIGSEGV instead of silently passing.  Prints "ok" at the end.

Usage: python _guard_pages.py [linux only: needs mmap + mprotect]
"""
import ctypes
import mmap
import sys

import numpy as np

import fastnn
from fastnn import _reference as ref

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE = 0


def guarded(shape, dtype, at_end, rng, order="C"):
    """A random array flush against a PROT_NONE page: after its last byte (at_end) or
    before its first.  The mapping lives as long as the array (its base)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    nbytes = count * dtype.itemsize
    data_pages = max(1, -(-nbytes // PAGE))
    m = mmap.mmap(-1, (data_pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    for off in (0, (data_pages + 1) * PAGE):
        if _libc.mprotect(base + off, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    start = (data_pages + 1) * PAGE - nbytes if at_end else PAGE
    arr = np.frombuffer(m, dtype, count=count, offset=start)
    arr = arr.reshape(shape[::-1]).T if order == "F" else arr.reshape(shape)
    arr[...] = rng.uniform(-1, 1, size=shape)
    return arr


def close(got, expected, dtype, k):
    rtol, atol = (1e-4, 1e-5 * max(k, 1) ** 0.5) if dtype == np.float32 else (1e-10, 1e-10)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def check_gemm(rng, dtype, M, N, K, ta, tb, at_end, order):
    a = guarded((K, M) if ta else (M, K), dtype, at_end, rng, order)
    b = guarded((N, K) if tb else (K, N), dtype, not at_end, rng, order)
    bias = guarded((N,), dtype, at_end, rng)
    out = guarded((M, N), dtype, not at_end, rng)
    c0 = out.copy()
    fastnn.gemm(a, b, out, trans_a=ta, trans_b=tb, alpha=1.5, beta=0.5, bias=bias,
                activation="sigmoid")
    close(out, ref.gemm(a, b, c0, ta, tb, 1.5, 0.5, bias, "sigmoid"), dtype, K)
    # reversed views walk memory backwards from the far end
    ar, br = a[::-1, ::-1], b[::-1]
    out2 = guarded((M, N), dtype, at_end, rng)
    fastnn.gemm(ar, br, out2, trans_a=ta, trans_b=tb, activation="tanh")
    close(out2, ref.gemm(ar, br, None, ta, tb, activation="tanh"), dtype, K)


def check_dense(rng, dtype, M, K, N, at_end):
    x = guarded((M, K), dtype, at_end, rng)
    W = guarded((N, K), dtype, not at_end, rng, "F")
    b = guarded((N,), dtype, at_end, rng)
    out = guarded((M, N), dtype, not at_end, rng)
    fastnn.linear_forward(x, W, b, "relu", out)
    close(out, ref.linear_forward(x, W, b, "relu"), dtype, K)
    g = guarded((M, N), dtype, at_end, rng)
    gx = guarded((M, K), dtype, not at_end, rng)
    gW = guarded((N, K), dtype, at_end, rng)
    gb = guarded((N,), dtype, not at_end, rng)
    ws = guarded((M, N), dtype, at_end, rng)
    gW0, gb0 = gW.copy(), gb.copy()
    fastnn.linear_backward(g, x, W, out, "relu", gx, gW, gb, accumulate=True, workspace=ws)
    ex, eW, eb = ref.linear_backward(g, x, W, out, "relu")
    close(gx, ex, dtype, N)
    close(gW, (gW0.astype(np.float64) + eW).astype(dtype), dtype, M)
    close(gb, (gb0.astype(np.float64) + eb).astype(dtype), dtype, M)
    y = guarded((M, N), dtype, not at_end, rng)
    fastnn.activation_forward(g, "tanh", y)
    close(y, ref.activation(g, "tanh"), dtype, 1)
    d = guarded((M, N), dtype, at_end, rng)
    fastnn.activation_backward(g, y, "tanh", d)
    close(d, ref.activation_grad(g, y, "tanh"), dtype, 1)


def main():
    rng = np.random.default_rng(0)
    gemm_shapes = [(1, 1, 1), (13, 35, 21), (7, 33, 300), (12, 32, 256), (6, 17, 5),
                   (25, 3, 9)]
    dense_shapes = [(1, 1, 1), (13, 21, 35), (30, 257, 17), (200, 40, 90)]
    n = 0
    for dtype in (np.float32, np.float64):
        for variant in fastnn.supported_kernel_variants():
            fastnn.set_kernel_variant(variant)
            for engine in ("native", "blas"):
                fastnn.set_engine(engine)
                for at_end in (True, False):
                    for M, N, K in gemm_shapes:
                        for ta in (False, True):
                            for tb in (False, True):
                                check_gemm(rng, dtype, M, N, K, ta, tb, at_end,
                                           "F" if (ta ^ tb) else "C")
                                n += 1
                    for M, K, N in dense_shapes:
                        check_dense(rng, dtype, M, K, N, at_end)
                        n += 1
    print("ok", n)


if __name__ == "__main__":
    sys.exit(main())
