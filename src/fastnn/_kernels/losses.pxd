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

cpdef enum PointwiseLoss:
    # the elementwise losses of pointwise_loss (pred and target of one shape)
    PW_MSE = 0          # (p - t)**2 (the weighted path of MSELoss)
    PW_BCE_LOGITS = 1   # -[pw t log sigmoid(p) + (1 - t) log(1 - sigmoid(p))]
    PW_BCE = 2          # -[t max(log p, -100) + (1 - t) max(log(1 - p), -100)]
    PW_L1 = 3           # |p - t|
    PW_HUBER = 4        # 0.5 d**2 if |d| < delta else delta (|d| - 0.5 delta)
    PW_SMOOTH_L1 = 5    # 0.5 d**2 / beta if |d| < beta else |d| - 0.5 beta (beta 0: L1)

cdef double pointwise_loss(int kind, Py_ssize_t m, Py_ssize_t n, const floating *p,
                           Py_ssize_t rsp, const floating *t, Py_ssize_t rst,
                           const double *sw, const double *pw, floating *g, Py_ssize_t rsg,
                           double param, double scale, double *rows,
                           int n_threads) noexcept nogil

# Softmax / LogSoftmax over the last axis (the modules and the compiled step's SOFTMAX /
# LOGSOFTMAX ops)
cdef void softmax_forward(Py_ssize_t m, Py_ssize_t n, const floating *x, Py_ssize_t rsx,
                          floating *y, Py_ssize_t rsy, bint logsm,
                          int n_threads) noexcept nogil
cdef void softmax_backward(Py_ssize_t m, Py_ssize_t n, const floating *g, Py_ssize_t rsg,
                           const floating *y, Py_ssize_t rsy, floating *gi, Py_ssize_t rsgi,
                           bint logsm, int n_threads) noexcept nogil
