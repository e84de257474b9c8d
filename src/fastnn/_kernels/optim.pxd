from cython cimport floating

cdef void sgd_update(Py_ssize_t n, floating *p, const floating *g, floating *buf,
                     floating lr, floating momentum, floating dampening, floating weight_decay,
                     bint nesterov, bint maximize, bint first, int n_threads) noexcept nogil
