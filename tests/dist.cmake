# Communicator, process grid, halos and scans at 1..4 ranks.
mpl_add_test(dist_comm LABELS mpi NP 1 2 3 4)
mpl_add_test(launch_sp LABELS mpi NP 1 2 3 4 TIMEOUT 600)
mpl_add_cli_test(sp TIMEOUT 600)
mpl_add_cli_test(comm_model TIMEOUT 300)
mpl_add_cli_test(slurm TIMEOUT 300)
mpl_add_test(launch_cls LABELS mpi NP 1 3 TIMEOUT 300)
