mpl_add_test(attention_dense LABELS unit)
