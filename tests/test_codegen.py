"""The compiled microkernels keep their accumulators in registers.

A GEMM microkernel is fast only while its MR x NR accumulator tile lives in vector
registers for the whole k loop.  gcc decides that per function, and a change far away (a
longer activation inlined into the writeback) made it keep the float64 AVX-512 tile in
memory: every FMA then loaded and stored its accumulator and that GEMM ran at a third of its
speed, with every result still correct.  Timings are too noisy to catch this in a test; the
machine code is not: disassemble the built `_core` module and check that the k loops of
every vector microkernel (the short loops full of FMAs) move no vector to or from a stack
slot.

Release builds only (`fastnn.config()["build"]`): a debug or sanitizer build is not meant
to keep anything in registers.  Skipped where it cannot look: not x86-64, no `objdump`, or
a stripped module.
"""
import platform
import re
import shutil
import subprocess

import pytest

from fastnn._kernels import _core

pytestmark = [
    pytest.mark.skipif(
        platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None,
        reason="needs x86-64 and objdump"),
    pytest.mark.skipif(not _core.build_info().startswith("release"),
                       reason=f"not a release build ({_core.build_info()})"),
]

# the vector microkernels: packed, A row-major / column-major / any strides in place
KERNELS = [f"ukr{kind}_{dt}_{isa}" for kind in ("", "_rows", "_cols")
           for dt in ("s", "d") for isa in ("avx2", "avx512")]
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
FUNC = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
JUMP = re.compile(r"^j\w+\s+([0-9a-f]+)\b")


@pytest.fixture(scope="module")
def functions():
    """{name: [(address, instruction text)]} for the kernels, from objdump."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _core.__file__],
                         capture_output=True, text=True, check=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), []) if m.group(1) in KERNELS else None
            continue
        m = INSN.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2)))
    if not funcs:
        pytest.skip("the kernel symbols are not in the module (stripped build?)")
    return funcs


def _k_loops(insns, max_len=120, min_fma=8):
    """The innermost loops (a backward jump closing at most max_len instructions) that
    hold at least min_fma FMAs: the microkernel's k loops, one per register-tile shape."""
    index = {a: i for i, (a, _) in enumerate(insns)}
    loops = []
    for i, (addr, text) in enumerate(insns):
        m = JUMP.match(text)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target <= addr and target in index and i - index[target] < max_len:
            body = [t for _, t in insns[index[target]:i + 1]]
            if sum("vfmadd" in t for t in body) >= min_fma:
                loops.append(body)
    return loops


@pytest.mark.parametrize("name", KERNELS)
def test_k_loops_keep_the_tile_in_registers(functions, name):
    if name not in functions:
        pytest.skip(f"{name} not found")
    loops = _k_loops(functions[name])
    assert loops, f"{name}: no k loop found (the test's pattern is out of date)"
    # the full-size tile: MR x NR/VL accumulators, e.g. 12 x 2 on AVX-512, 6 x 2 on AVX2
    assert max(sum("vfmadd" in t for t in body) for body in loops) >= 12, name
    for body in loops:
        # a vector register loaded from / stored to / combined with a stack slot (a
        # broadcast scalar, e.g. alpha, or a spilled row address is harmless)
        stack = [t for t in body if ("(%rsp)" in t or "(%rbp)" in t)
                 and ("%ymm" in t or "%zmm" in t) and "broadcast" not in t]
        assert not stack, (f"{name}: a k loop moves vectors to/from the stack -- the "
                           f"accumulator tile left the registers:\n" + "\n".join(stack[:8]))
