"""Build fastnn's compiled core.

Environment switches:
  FASTNN_OPENMP=0   build without OpenMP (serial kernels)
  FASTNN_DEBUG=1    bounds checking, wraparound and initialization checks on, -O0 -g
  FASTNN_DEBUG_OPT  the C optimization flags of a debug or sanitizer build instead of -O0 -g
                    (e.g. "-O2 -g": the same checks, a full test suite ~10x faster)
  FASTNN_SANITIZE=1 AddressSanitizer + UndefinedBehaviorSanitizer (-fsanitize=address,undefined,
                    -O1 -g): run with the ASan runtime preloaded, e.g.
                    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0
"""
import os
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_core", "gemm", "blas", "dense", "losses", "optim", "clip", "step", "gates",
           "norm", "dropout"]
DEBUG = os.environ.get("FASTNN_DEBUG", "0") == "1"
SANITIZE = os.environ.get("FASTNN_SANITIZE", "0") == "1"
# -fno-sanitize-recover: a UBSan finding aborts (so a test run fails) instead of printing on
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer"]


def _flag_off(name):
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def _openmp_flags(compiler):
    """(compile_args, link_args) that enable OpenMP, or None when a test program won't build."""
    if _flag_off("FASTNN_OPENMP"):
        return None
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
    src = textwrap.dedent("""
        #include <omp.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 ? 0 : 1;
        }
    """)
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "omp_test.c")
            with open(path, "w") as f:
                f.write(src)
            try:
                objs = compiler.compile([path], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_test", output_dir=tmp,
                                         extra_postargs=lflags)
            except Exception:
                continue
            return cflags, lflags
    return None


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # one compiler job per core (pip install passes no -j)
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        omp = _openmp_flags(self.compiler)
        if omp is None:
            reason = ("FASTNN_OPENMP=0" if _flag_off("FASTNN_OPENMP")
                      else "the compiler could not build an OpenMP test program")
            print(f"WARNING: fastnn is built WITHOUT OpenMP ({reason}); "
                  "its kernels will run on one thread.", file=sys.stderr)
            cflags, lflags = [], []
        else:
            cflags, lflags = omp
        # objects in build/ are reused when up to date: recompile everything when the
        # configuration (OpenMP, debug) differs from the one they were built with
        config = f"openmp={cflags} {lflags} debug={DEBUG}"
        if SANITIZE:
            config += " sanitize=True"
        if DEBUG or SANITIZE:
            config += f" opt={os.environ.get('FASTNN_DEBUG_OPT', '')}"
        stamp = os.path.join(self.build_temp, "fastnn-build-config.txt")
        try:
            with open(stamp) as f:
                previous = f.read()
        except OSError:
            previous = None
        if previous != config:
            self.force = True
            os.makedirs(self.build_temp, exist_ok=True)
            with open(stamp, "w") as f:
                f.write(config)
        # -g0 undoes the -g in Python's CFLAGS: release objects without debug info are ~8x
        # smaller and compile faster
        opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
        san = []
        if SANITIZE:
            opt = ["-O0", "-g"] if DEBUG else ["-O1", "-g"]
            san = SANITIZE_FLAGS
        if (DEBUG or SANITIZE) and os.environ.get("FASTNN_DEBUG_OPT", "").strip():
            opt = os.environ["FASTNN_DEBUG_OPT"].split()
        # what kind of build this is, for fastnn.config()["build"] (tests/test_codegen.py
        # inspects the machine code of release builds only)
        kind = "sanitize" if SANITIZE else "debug" if DEBUG else "release"
        build_macro = ("FNN_BUILD", '"%s %s"' % (kind, " ".join(opt)))
        for ext in self.extensions:
            ext.define_macros = [m for m in ext.define_macros if m[0] != "FNN_BUILD"]
            ext.define_macros.append(build_macro)
            # -ffp-contract=fast lets the microkernel use FMA; never -ffast-math (crtfastmath
            # would set flush-to-zero process-wide), never -march=native.
            # -fno-wrapv undoes the -fwrapv in Python's CFLAGS, which blocks vectorizing our
            # int-indexed loops (packing); the kernels never rely on signed overflow.
            # -fno-math-errno lets sqrt be one instruction, so the Adam / RMSprop loops
            # vectorize (it changes no value: sqrt is correctly rounded either way; errno is
            # never read).
            ext.extra_compile_args = opt + ["-ffp-contract=fast", "-fno-wrapv", "-fno-math-errno",
                                            "-Wno-unused-function", "-Wno-psabi"] + cflags + san
            ext.extra_link_args = lflags + san
        super().build_extensions()


directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# Cython's memoryview / fused-type utility code, generated once into this module and
# imported by every kernel module (instead of a copy in each)
SHARED = "fastnn._kernels._cyutility"

extensions = [
    Extension(SHARED, ["src/fastnn/_kernels/_cyutility.c"]),
] + [
    Extension(
        f"fastnn._kernels.{name}",
        [f"src/fastnn/_kernels/{name}.pyx"],
        include_dirs=["src/fastnn/_kernels", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=[f"src/fastnn/_kernels/{h}" for h in ("fnn_types.h", "fnn_simd.h", "fnn_simd_impl.h")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, force=DEBUG,
                          nthreads=os.cpu_count() or 1,
                          shared_utility_qualified_name=SHARED),
    cmdclass={"build_ext": BuildExt},
)
