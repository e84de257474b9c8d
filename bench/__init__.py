"""fastnn's benchmarks: ``python -m bench`` (the suite, bench/run.py), bench/gemm.py (GEMM),
bench/step.py (training steps only), bench/tune.py and bench/threshold.py (kernel tuning)."""
