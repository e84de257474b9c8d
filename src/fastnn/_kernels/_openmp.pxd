# OpenMP shim: compiles with or without OpenMP (never `cimport openmp`).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FNN_HAVE_OPENMP 1
    #else
    #define FNN_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_threads(void) { return 1; }
    #endif
    """
    bint FNN_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
