from cython cimport floating
from libc.stdint cimport int64_t

cdef double mse_loss(Py_ssize_t m, Py_ssize_t n, const floating *p, Py_ssize_t rsp,
                     const floating *t, Py_ssize_t rst, floating *g, Py_ssize_t rsg,
                     double scale, double *rows, int n_threads) noexcept nogil
cdef double xent_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                      const int64_t *y, floating *g, Py_ssize_t rsg, double scale,
                      double *rows, int n_threads) noexcept nogil
cdef double svm_loss(Py_ssize_t m, Py_ssize_t n, const floating *s, Py_ssize_t rss,
                     const int64_t *y, floating *g, Py_ssize_t rsg, double margin,
                     double scale, double *rows, int n_threads) noexcept nogil
