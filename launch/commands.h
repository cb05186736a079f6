/* The subcommands of `multipole`; each returns the process exit code.
 * MPI is initialised by main() before any of them runs. */
#ifndef MPL_COMMANDS_H
#define MPL_COMMANDS_H

#include "core/status.h"
#include "dist/comm.h"

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
/* `bench comm --model` (cmd_bench_comm_model.c), dispatched by bench comm. */
int mpl_cmd_bench_comm_model(const struct mpl_cli *cli, int argc, char **argv);

/* Local. The attention-shape options `bench attention` and `bench comm`
 * share (--attn --band --maps --causal into cfg, --heads, --head-dim):
 * 1 when argv[*i] is one of them (its value parsed, *st set), -1 when its
 * value is missing, 0 otherwise. */
struct mpl_config;
int mpl_bench_attn_opt(int argc, char **argv, int *i, struct mpl_config *cfg, long long *heads,
                       long long *head_dim, mpl_status *st);

/* Collective on world: one forward and one backward of cfg's attention
 * (kind fmm, combiner_fixed or combiner_logsparse; cfg->segment 0: round
 * sqrt(L)) on one sequence of L tokens split over world's ranks, on random
 * inputs; *fwd and *bwd receive the bytes each kind of exchange moved, and
 * ms[0], ms[1] the forward and backward milliseconds, each the maximum
 * over ranks (cmd_bench_comm.c). */
struct mpl_config;
mpl_status mpl_bench_comm_measure(mpl_comm *world, const struct mpl_config *cfg, int64_t L,
                                  mpl_comm_bytes *fwd, mpl_comm_bytes *bwd, double ms[2]);

/* Collective on c (the trainer's world): W untimed, then N timed training
 * steps of t on fixed generated tokens; ms = {median, min, max}
 * milliseconds, each step's time the slowest rank's (cmd_bench.c). */
struct mpl_trainer;
mpl_status mpl_bench_step_time(struct mpl_trainer *t, mpl_comm *c, long long steps,
                               long long warmup, double ms[3]);

#endif
