mpl_add_test(attention_dense LABELS unit)
mpl_add_test(attention_fmm SOURCES test_attention_fmm.c test_attention_fmm_chunks.c LABELS unit TIMEOUT 600)
mpl_add_test(attention_combiner LABELS unit TIMEOUT 600)
mpl_add_cli_test(kinds TIMEOUT 600)
