mpl_add_test(core_layers LABELS unit)
# GPU tests (LABELS gpu): built with the CUDA backend, skipped (77) where
# there is no usable GPU; under MPL_CUDA_EMU they run on the CPU emulation.
if(MPL_HAVE_CUDA)
  mpl_add_test(core_cuda_kernels LABELS gpu)
endif()
if(MPL_HAVE_CUDA)
  mpl_add_test(core_cuda_model LABELS gpu TIMEOUT 600)
endif()
