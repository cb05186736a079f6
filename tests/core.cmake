mpl_add_test(core_layers LABELS unit)
