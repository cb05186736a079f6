# io module tests: token files (unit) and checkpoints (MPI, 1-4 ranks: 4 gives a rank an empty share of a 3-row tensor).
mpl_add_test(io_data LABELS unit)
mpl_add_test(io_data_formats LABELS unit)
mpl_add_test(io_ckpt LABELS mpi NP 1 2 3 4)
mpl_add_test(io_ckpt_chunk LABELS unit)
mpl_add_test(io_listops LABELS unit)
# The same at 3 ranks with MPI calls split at 1000 elements: the load's
# all-gather then takes the broadcast path of blocks past MPI's int counts,
# and the reductions and broadcasts their piece loops.
add_test(NAME io.ckpt.np3_split
         COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 3 --oversubscribe
                 $<TARGET_FILE:test_io_ckpt>)
set_tests_properties(io.ckpt.np3_split PROPERTIES LABELS mpi TIMEOUT 300
                     ENVIRONMENT "${MPL_TEST_ENV};MPL_COMM_MAX_COUNT=1000")
