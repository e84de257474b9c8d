"""Fuzz harnesses for fastnn (issue 18): every input must end in a result or a Python
exception of a documented type -- never a crash, a hang or an out-of-bounds read.

One file per target, each with ``test_one_input(data: bytes)`` (atheris's TestOneInput) and
``seeds()`` (the inputs a fresh corpus starts from):

  fuzz_load   fastnn.load / fastnn.load_checkpoint on mutated .npz files
  fuzz_api    the public API with fuzzed shapes, strides, dtypes, byte orders, values
  fuzz_state  Module.load_state_dict and the optimizers' load_state_dict

Run them with ``python -m tests.fuzz --seconds N`` (atheris when installed, else a random
mutation loop over the same harnesses); see ``python -m tests.fuzz --help``.  The corpus of
interesting inputs lives in tests/fuzz/corpus/<target>/; tests/test_fuzz_corpus.py replays it
(and the crash regressions) in the default test suite.
"""
