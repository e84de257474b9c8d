"""Shared fixtures: dtype / engine / kernel-variant parametrization (restoring the previous
setting after each test), and a reproducible random generator."""
import zlib

import numpy as np
import pytest

import fastnn
from _util import DTYPES, ENGINES, VARIANTS


def _restore_threads(previous):
    # get_num_threads() cannot tell "following OpenMP" from an explicit count, so go back to
    # following OpenMP, and pin the old count only if that gives a different number.
    fastnn.set_num_threads(None)
    if fastnn.get_num_threads() != previous:
        fastnn.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _restore_fastnn_state():
    """Whatever a test does to the process-wide settings, put them back afterwards."""
    engine = fastnn.get_engine()
    variant = fastnn.get_kernel_variant()
    threads = fastnn.get_num_threads()
    try:
        yield
    finally:
        fastnn.set_engine(engine)
        fastnn.set_kernel_variant(variant)
        _restore_threads(threads)


@pytest.fixture(params=DTYPES, ids=lambda d: d.name)
def dtype(request):
    return request.param


@pytest.fixture(params=ENGINES)
def engine(request):
    """Select the GEMM engine process-wide for the test (restored afterwards)."""
    previous = fastnn.get_engine()
    fastnn.set_engine(request.param)
    try:
        yield request.param
    finally:
        fastnn.set_engine(previous)


@pytest.fixture(params=VARIANTS)
def variant(request):
    """Select the microkernel variant for the test (restored afterwards)."""
    previous = fastnn.get_kernel_variant()
    fastnn.set_kernel_variant(request.param)
    try:
        yield request.param
    finally:
        fastnn.set_kernel_variant(previous)


@pytest.fixture
def native():
    """The native engine (fastnn's own GEMM) for the test."""
    previous = fastnn.get_engine()
    fastnn.set_engine("native")
    try:
        yield "native"
    finally:
        fastnn.set_engine(previous)


@pytest.fixture
def threads():
    """Lets a test call set_num_threads freely; the previous setting comes back after."""
    previous = fastnn.get_num_threads()
    try:
        yield
    finally:
        _restore_threads(previous)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id, so a failure reproduces."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
