"""fastnn's benchmarks, run from the repository root as modules: ``python -m bench`` (the
suite, bench/run.py), ``python -m bench.gemm`` (GEMM), ``python -m bench.step`` (training
steps only), ``python -m bench.tune``, ``python -m bench.threshold`` and
``python -m bench.tiny`` (kernel tuning)."""
