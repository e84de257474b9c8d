"""The fuzz corpus (tests/fuzz/corpus/<target>/, including every input that once crashed a
harness) and each harness's seeds, replayed through the harnesses: each input must end in a
result or a documented exception (tests/fuzz/_common.py DOCUMENTED).  Fuzzing itself:
python -m tests.fuzz --seconds N (see tests/fuzz/__init__.py)."""
import importlib
import os

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")
TARGETS = ("fuzz_load", "fuzz_api", "fuzz_state")


def _harness(target):
    # tests/ is on sys.path (pytest's rootdir conftest), so the harnesses are package "fuzz"
    return importlib.import_module(f"fuzz.{target}")


def _inputs():
    for t in TARGETS:
        d = os.path.join(HERE, "corpus", t)
        files = sorted(os.listdir(d)) if os.path.isdir(d) else []
        yield pytest.param(t, None, id=f"{t}-seeds")
        for f in files:
            yield pytest.param(t, os.path.join(d, f), id=f"{t}-{f[:16]}")


@pytest.mark.parametrize("target, path", list(_inputs()))
def test_corpus_input(target, path):
    h = _harness(target)
    if path is None:
        for data in h.seeds():
            h.test_one_input(data)
    else:
        with open(path, "rb") as f:
            h.test_one_input(f.read())


def test_corpus_is_small():
    """The corpus stays lean: small files, a bounded total."""
    total = 0
    for t in TARGETS:
        d = os.path.join(HERE, "corpus", t)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            size = os.path.getsize(os.path.join(d, f))
            assert size <= 4096, (t, f, size)
            total += size
    assert total < 512 * 1024, total
