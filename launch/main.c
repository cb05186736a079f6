/* `multipole`: initialise MPI, dispatch the subcommand, finalise. The only
 * place besides the subcommands that decides the process's exit code. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const main_help =
    "usage: multipole <command> [options]   (every command takes --help)\n"
    "\n"
    "commands:\n"
    "  prepare   turn text, FASTA or token-id files into an HDF5 token file\n"
    "  train     train a model (mpirun -np N for sequence/data parallelism)\n"
    "  eval      validation loss, bits per token/byte, perplexity of a checkpoint\n"
    "  sample    generate text from a checkpoint, streamed token by token\n"
    "  plot      loss and throughput plots (PNG, gnuplot) of a run directory\n"
    "  inspect   describe a token file or a checkpoint\n"
    "  bench     benchmarks (CSV): step, attention, comm (--model), ckpt\n"
    "  config    list the config keys (--keys, --markdown) or print a config\n"
    "  op        evaluate one op from an HDF5 file (attention), for checks\n"
    "  plan      the memory plan of a config and the longest sequence that fits\n"
    "\n"
    "  --version print the build\n";

typedef int (*cmd_fn)(int, char **);
static const struct {
    const char *name;
    cmd_fn fn;
} commands[] = {
    {"train", mpl_cmd_train},     {"sample", mpl_cmd_sample}, {"prepare", mpl_cmd_prepare},
    {"inspect", mpl_cmd_inspect}, {"bench", mpl_cmd_bench},   {"config", mpl_cmd_config},
    {"op", mpl_cmd_op},           {"eval", mpl_cmd_eval},     {"plot", mpl_cmd_plot},
    {"plan", mpl_cmd_plan},
};

int main(int argc, char **argv)
{
    int rank = 0, rc = 0;
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        fputs(main_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("%s\n", mpl_build_info());
        return 0;
    }
    cmd_fn fn = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) fn = commands[i].fn;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (!fn) {
        /* Every rank of an mpirun sees the same command line: one says so. */
        if (rank == 0)
            fprintf(stderr, "multipole: error: unknown command '%s'\nTry 'multipole --help'.\n",
                    argv[1]);
        rc = 2;
    } else {
        rc = fn(argc - 1, argv + 1);
    }
    fflush(stdout);
    MPI_Finalize();
    return rc;
}
