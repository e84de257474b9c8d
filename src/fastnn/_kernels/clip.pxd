# Gradient clipping kernels (clip.pyx): the norm of a list of gradients in a fixed order,
# and the in-place scale and clamp.  fastnn/nn/utils.py (clip_grad_norm_, clip_grad_value_)
# and the compiled step (step.pyx) call these same functions, so both paths agree bitwise.
from cython cimport floating

# One gradient as the kernels see it: n contiguous values of float32 (dbl false) or float64.
cdef struct GradView:
    Py_ssize_t n
    void *g
    bint dbl

# sum |g|^p (p == 2: of squares; p == inf: max |g|) over n contiguous values in float64,
# in CLIP_CHUNK-element chunks whose partials are added in chunk order: bitwise identical
# for any n_threads.  NaN propagates (also through the max).
cdef double pow_sum(Py_ssize_t n, const floating *g, double p, int n_threads) noexcept nogil

# The p-norm of one gradient: pow_sum ** (1/p) (sqrt for 2; as is for 1 and inf).
cdef double grad_norm(Py_ssize_t n, const floating *g, double p, int n_threads) noexcept nogil

# The total p-norm of k gradients, as torch: the norm of the vector of their norms, folded
# in list order.  0 for k == 0.
cdef double total_norm(const GradView *v, Py_ssize_t k, double p, int n_threads) noexcept nogil

# torch's coefficient max_norm / (total_norm + 1e-6); clip_scale applies it when it is
# below 1 (or NaN, as torch's clamp(coef, max=1) keeps a NaN).
cdef double clip_coef(double max_norm, double total) noexcept nogil
cdef void clip_scale(const GradView *v, Py_ssize_t k, double coef, int n_threads) noexcept nogil

# g *= coef (coef rounded to g's dtype), elementwise.
cdef void grad_scale(Py_ssize_t n, floating *g, floating coef, int n_threads) noexcept nogil
# g = min(max(g, lo), hi) elementwise (torch's clamp_min then clamp_max; NaN stays NaN).
cdef void grad_clamp(Py_ssize_t n, floating *g, floating lo, floating hi,
                     int n_threads) noexcept nogil
