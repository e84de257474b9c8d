# The normalization kernels as nogil C functions (the compiled training step calls them; the
# def entry points in norm.pyx wrap them).  Every (m, n) array is row-major and contiguous
# (row stride n) except the forward input x (row stride rsx); n_threads already resolved
# (engine rule applied by the caller).  A NULL pointer means "not wanted" / "no affine".
from cython cimport floating

cdef void layernorm_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                            const floating *w, const floating *b, double eps, floating *y,
                            floating *xhat, floating *rstd, int n_threads) noexcept nogil
cdef void layernorm_backward(Py_ssize_t m, Py_ssize_t n, const floating *dy,
                             const floating *xhat, const floating *rstd, const floating *w,
                             floating *dx, floating *gw, floating *gb, bint accw, bint accb,
                             floating *work, int n_threads) noexcept nogil
cdef void batchnorm_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                            const floating *w, const floating *b, double eps, floating *y,
                            floating *xhat, floating *mean, floating *invstd,
                            floating *rmean, floating *rvar, bint batch_stats, double factor,
                            int n_threads) noexcept nogil
cdef void batchnorm_backward(Py_ssize_t m, Py_ssize_t n, const floating *dy,
                             const floating *xhat, const floating *invstd, const floating *w,
                             bint batch_stats, floating *dx, floating *gw, floating *gb,
                             bint accw, bint accb, floating *sums, floating *work,
                             int n_threads) noexcept nogil
