# Communicator, process grid, halos and scans at 1..4 ranks.
mpl_add_test(dist_comm LABELS mpi NP 1 2 3 4)
