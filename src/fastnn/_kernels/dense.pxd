from cython cimport floating

cdef int gemm_any(int engine, int n_threads, int M, int N, int K, floating alpha,
                  const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                  const floating *B, Py_ssize_t rsb, Py_ssize_t csb,
                  floating beta, floating *C, Py_ssize_t rsc,
                  const floating *bias, int act, floating slope) noexcept nogil
