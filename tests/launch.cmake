# Model, trainer and command tests.
mpl_add_test(core_model LABELS unit)
mpl_add_test(core_adamw LABELS unit)
mpl_add_test(launch_config LABELS unit)
mpl_add_test(launch_train LABELS mpi NP 1 TIMEOUT 600)
mpl_add_cli_test(errors)
mpl_add_cli_test(dp TIMEOUT 600)
mpl_add_cli_test(resume TIMEOUT 600)
mpl_add_cli_test(sample)
