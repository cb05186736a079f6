/* Where a model or an attention instance runs. Separate from model.h and
 * attn.h because both name it (attn.h cannot include model.h) and the
 * launcher parses it from the config. */
#ifndef MPL_DEVICE_H
#define MPL_DEVICE_H

typedef enum mpl_device {
    MPL_DEVICE_CPU = 0, /* host memory, OpenMP + OpenBLAS: the reference */
    MPL_DEVICE_CUDA     /* one NVIDIA GPU through an mpl_cuda context (core/cuda.h) */
} mpl_device;

/* The CUDA context (core/cuda.h); named here so that configs can borrow one. */
struct mpl_cuda;

#endif
