# Pointers and strides of typed memoryviews, shared by the kernel modules' Python entry
# points (the nogil kernels below them take raw pointers and element strides).
# An empty view (a zero extent) gives NULL: the kernels read "no array" from that, and
# never index it.  Strides are in elements, not bytes.
from cython cimport floating


cdef inline const floating *cptr2(const floating[:, :] X) noexcept nogil:
    return &X[0, 0] if X.shape[0] > 0 and X.shape[1] > 0 else NULL


cdef inline floating *ptr2(floating[:, :] X) noexcept nogil:
    return &X[0, 0] if X.shape[0] > 0 and X.shape[1] > 0 else NULL


cdef inline const floating *cptr1(const floating[::1] X) noexcept nogil:
    return &X[0] if X.shape[0] > 0 else NULL


cdef inline Py_ssize_t row_stride(const floating[:, :] X) noexcept nogil:
    return X.strides[0] // <Py_ssize_t>sizeof(floating)


cdef inline Py_ssize_t col_stride(const floating[:, :] X) noexcept nogil:
    return X.strides[1] // <Py_ssize_t>sizeof(floating)
