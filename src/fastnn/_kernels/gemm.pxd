from cython cimport floating

cdef int gemm_native(int M, int N, int K, floating alpha,
                     const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                     const floating *B, Py_ssize_t rsb, Py_ssize_t csb,
                     floating beta, floating *C, Py_ssize_t rsc,
                     const floating *bias, int act, floating slope,
                     int n_threads) noexcept nogil

cdef int gemm_threads(int M, int N, int K, int n_threads) noexcept nogil
