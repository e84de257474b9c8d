# The gate kernels as nogil C functions (the compiled training step calls them; the def
# entry points in gates.pyx wrap them).  2-D operands with a unit column stride; row
# strides in elements; n_threads already resolved (engine rule applied by the caller).
from cython cimport floating

cdef void binary_forward(Py_ssize_t m, Py_ssize_t n, const floating *a, Py_ssize_t ra,
                         const floating *b, Py_ssize_t rb, floating *y, Py_ssize_t ry,
                         int op, int n_threads) noexcept nogil
cdef void binary_backward(Py_ssize_t m, Py_ssize_t n, const floating *g, Py_ssize_t rg,
                          const floating *a, Py_ssize_t ra, const floating *b,
                          Py_ssize_t rb, floating *ga, Py_ssize_t rga, floating *gb,
                          Py_ssize_t rgb, int op, int n_threads) noexcept nogil
cdef void copy_rows(Py_ssize_t m, Py_ssize_t n, const floating *src, Py_ssize_t rs,
                    floating *dst, Py_ssize_t rd, int n_threads) noexcept nogil
