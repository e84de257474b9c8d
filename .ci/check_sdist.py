"""CI: the sdist holds everything a build needs (sources, headers, .pxd, the license) and no
generated file (.c from Cython, compiled extensions)."""
import sys
import tarfile

path = sys.argv[1]
with tarfile.open(path) as t:
    names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
kern = "src/fastnn/_kernels/"
need = ["setup.py", "pyproject.toml", "README.md", "LICENSE", "src/fastnn/py.typed",
        kern + "fnn_types.h", kern + "fnn_simd.h", kern + "fnn_simd_impl.h"]
need += [kern + f"{m}.pyx" for m in ("_core", "gemm", "blas", "dense", "losses", "optim",
                                     "clip", "step", "gates", "norm")]
need += [kern + f"{m}.pxd" for m in ("_core", "_views", "_openmp", "optim", "gates", "norm")]
missing = [n for n in need if n not in names]
generated = [n for n in names if n.startswith(kern) and n.endswith((".c", ".so", ".pyd", ".html"))]
if missing or generated:
    sys.exit(f"sdist {path}: missing {missing}, generated files {generated}")
print(f"sdist {path}: {len(names)} files, complete, no generated files")
