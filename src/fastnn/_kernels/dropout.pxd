# Dropout's nogil kernels (the compiled training step calls them; dropout.pyx's def entry
# points wrap them).  Rows of contiguous values, row strides in elements, n_threads already
# resolved (engine rule applied by the caller).
from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t

cdef uint64_t dropout_key(uint64_t seed, uint64_t step) noexcept nogil
cdef void dropout_apply(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                        floating *y, Py_ssize_t rsy, uint64_t key, uint32_t thresh,
                        floating scale, int n_threads) noexcept nogil
