# io module tests: token files (unit) and checkpoints (MPI, 1-4 ranks: 4 gives a rank an empty share of a 3-row tensor).
mpl_add_test(io_data LABELS unit)
mpl_add_test(io_data_formats LABELS unit)
mpl_add_test(io_ckpt LABELS mpi NP 1 2 3 4)
mpl_add_test(io_ckpt_chunk LABELS unit)
mpl_add_test(io_listops LABELS unit)
