from cython cimport floating

# The optimizer contract on the kernel side: an update is (kind, up to OPT_MAX_HYPER
# hyperparameters, up to OPT_MAX_STATE state buffers per parameter, the update's number t).
# fastnn/optim/optimizer.py's Optimizer fills it (Optimizer._kind, _hyper, _prepare_state); the
# compiled step passes it through without knowing which optimizer it is.
cdef enum:
    OPT_MAX_HYPER = 8
    OPT_MAX_STATE = 4

cdef struct OptHyper:
    int kind                    # OptKind
    double v[OPT_MAX_HYPER]     # the optimizer's _hyper, in its order
    long long t                 # 1-based number of the update being applied

cdef void opt_update(const OptHyper *h, Py_ssize_t n, floating *p, const floating *g,
                     void **state, bint first, int n_threads) noexcept nogil

cdef void sgd_update(Py_ssize_t n, floating *p, const floating *g, floating *buf,
                     floating lr, floating momentum, floating dampening, floating weight_decay,
                     bint nesterov, bint maximize, bint first, int n_threads) noexcept nogil
