"""fastnn's compiled core: Cython over raw pointers, OpenMP loops, one nogil call per operation.

The design, in four rules:

* Who validates.  Python does, once, at the boundary: ``fastnn/_checks.py`` holds every
  argument check and its message (shapes, dtypes, strides, aliasing, label ranges).  A kernel
  trusts what it is given and checks nothing but allocation failures; the ``def`` entry points
  of these modules are private and are only called with checked arguments.
* Who loops.  The kernels: every loop over elements, rows or tiles runs here without the GIL.
  The thread count of a call is decided in ``_core.pxd`` (``loop_threads``: one thread with the
  BLAS engine, whose own pool owns the cores; ``elem_threads``: one thread below a size
  threshold).  Each thread owns whole outputs (rows, tiles), and every reduction runs in a
  fixed order, so results are bitwise identical for any thread count.
* Who owns memory.  NumPy does: Python allocates every input, output and gradient and passes
  it in; a kernel writes only into what it was handed.  The only memory the kernels own is
  scratch (``_core.workspace``, per OS thread, grow-only) and the compiled step's program
  (``step.StepKernel``: C structs it allocates, and references to the arrays it points at,
  so they cannot be freed under it).
* What never crosses the boundary.  No Python object, exception or GIL acquisition inside
  nogil code; errors come back as integer codes that the entry point turns into exceptions.
  Every code that does cross (activations, engines, gates, losses, program ops) is defined
  once, in ``fnn_types.h``, and seen from Python as the IntEnums of ``_core``
  (``Activation``, ``Engine``, ``GateOp``, ``LossKind``, ``OptKind``, ``OpKind``).

Layout: ``_core`` (settings, per-ISA kernel table, elementwise kernels, scratch), ``gemm``
(the packed native GEMM engine), ``blas`` (the SciPy-BLAS engine), ``dense`` (Linear forward /
backward over either engine), ``gates``, ``losses``, ``optim``, ``clip`` (gradient norms in a
fixed order, scale and clamp), ``norm`` (LayerNorm / BatchNorm1d), ``step`` (the compiled
training step); ``_views.pxd``
(memoryview pointers and strides), ``fnn_simd*.h`` (the microkernels).
"""
import importlib as _importlib
import os as _os

_MODULES = ("_core", "gemm", "blas", "dense", "gates", "losses", "optim", "clip", "step",
            "norm")


def _check_build():
    # As scikit-learn's __check_build: an unbuilt source tree fails here with instructions,
    # not later with a bare "No module named fastnn._kernels._core".
    for name in _MODULES:
        try:
            _importlib.import_module(f"{__name__}.{name}")
        except ImportError as e:
            here = _os.path.dirname(_os.path.abspath(__file__))
            root = _os.path.dirname(_os.path.dirname(_os.path.dirname(here)))
            in_tree = _os.path.isfile(_os.path.join(root, "setup.py"))
            how = (f"You are importing fastnn from its source tree ({root}) without the "
                   "compiled extensions. Build them in place with\n"
                   "    pip install --no-build-isolation -e .\n"
                   "from that directory (or install with `pip install .` and import fastnn "
                   "from elsewhere)." if in_tree else
                   "Reinstall fastnn (`pip install --force-reinstall fastnn`); the install "
                   "is missing its compiled extensions or their runtime libraries.")
            raise ImportError(f"fastnn: the compiled module fastnn._kernels.{name} cannot be "
                              f"imported ({e}).\n{how}") from e


_check_build()
