# io module tests: token files (unit) and checkpoints (MPI, 1-3 ranks).
mpl_add_test(io_data LABELS unit)
mpl_add_test(io_ckpt LABELS mpi NP 1 2 3)
