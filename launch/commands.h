/* The subcommands of `multipole`; each returns the process exit code.
 * MPI is initialised by main() before any of them runs. */
#ifndef MPL_COMMANDS_H
#define MPL_COMMANDS_H

#include "core/status.h"

int mpl_cmd_train(int argc, char **argv);
int mpl_cmd_sample(int argc, char **argv);
int mpl_cmd_eval(int argc, char **argv);
int mpl_cmd_plot(int argc, char **argv);
int mpl_cmd_prepare(int argc, char **argv);
int mpl_cmd_inspect(int argc, char **argv);
int mpl_cmd_bench(int argc, char **argv);
/* `bench ckpt` (cmd_bench_ckpt.c), dispatched by mpl_cmd_bench. */
int mpl_cmd_bench_ckpt(int argc, char **argv);
int mpl_cmd_config(int argc, char **argv);
int mpl_cmd_op(int argc, char **argv);
int mpl_cmd_plan(int argc, char **argv);

/* Subcommands of `bench` (argv[1] is the benchmark's name). */
struct mpl_cli;
int mpl_cmd_bench_comm(const struct mpl_cli *cli, int argc, char **argv);

/* Local. The attention-shape options `bench attention` and `bench comm`
 * share (--attn --band --maps --causal into cfg, --heads, --head-dim):
 * 1 when argv[*i] is one of them (its value parsed, *st set), -1 when its
 * value is missing, 0 otherwise. */
struct mpl_config;
int mpl_bench_attn_opt(int argc, char **argv, int *i, struct mpl_config *cfg, long long *heads,
                       long long *head_dim, mpl_status *st);

#endif
