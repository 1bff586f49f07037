"""Pure-numpy reference implementations, independent of the C library; tests
and the op's numpy reference check the compiled kernels against them."""
