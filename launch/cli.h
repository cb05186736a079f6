/* What every subcommand shares: who we are in the world, how errors end the
 * process (only launch/ ends processes), argument helpers and build info. */
#ifndef MPL_CLI_H
#define MPL_CLI_H

#include "core/status.h"

/* Exit codes: 0 ok, 1 failure while working, 2 bad usage or bad input. */
enum { MPL_EXIT_OK = 0, MPL_EXIT_FAIL = 1, MPL_EXIT_USAGE = 2 };

typedef struct mpl_cli {
    int rank, world;
    char host[64];
    const char *cmd;       /* "train", ... */
} mpl_cli;

/* Local. Fill rank/world/host (MPI is initialised). */
void mpl_cli_init(mpl_cli *cli, const char *cmd);

/* Local. Report an error and return the exit code to use: rank 0 prints
 * "multipole: error: <cause>"; another rank prints only an error of its
 * own (not one it learnt from a peer), prefixed with [rank r/n host].
 * MPL_TRACE=1 adds the call trace. Clears the error stack. */
int mpl_cli_error(const mpl_cli *cli, int exit_code);

/* Local. An error in the arguments or config files, which every rank reads
 * alike and fails on alike: rank 0 reports it, the others only clear it,
 * so an mpirun prints it once. Returns 2. */
int mpl_cli_arg_error(const mpl_cli *cli);

/* Collective on MPI_COMM_WORLD: a command whose work rank 0 does alone
 * (prepare, inspect, plot) returns rank 0's exit code on every rank, so
 * that all ranks of an mpirun fail together. */
int mpl_cli_rank0_rc(const mpl_cli *cli, int rc);

/* Local. A usage error: message plus a --help hint on rank 0; returns 2. */
int mpl_cli_usage(const mpl_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Local. Exit code for a failed setup step: bad input (config, files,
 * arguments) is 2, anything else 1. */
int mpl_cli_exit_code(mpl_status st);

/* Local. If argv[*i] is `name`, take the next argument as *value and
 * advance; returns 1 on match, -1 when the value is missing, 0 otherwise. */
int mpl_cli_opt(int argc, char **argv, int *i, const char *name, const char **value);
/* Local. Parse a whole number / real for option `name`. */
mpl_status mpl_cli_parse_i64(const char *name, const char *s, long long lo, long long hi,
                             long long *out);
mpl_status mpl_cli_parse_f64(const char *name, const char *s, double lo, double hi, double *out);

/* Local. The checkpoint file `arg` names: a checkpoint file itself, a run
 * directory (its `latest`), or a `latest` pointer file (the name in it,
 * relative to its directory). MPL_ERR_IO naming arg when there is none. */
mpl_status mpl_cli_ckpt_path(const char *arg, char *path, size_t n);

/* Local. "multipole 0.1.0 (git abc123) cuda=no nccl=no ..." */
const char *mpl_build_info(void);

/* Local. Seconds from a monotonic clock. */
double mpl_now(void);

#endif
