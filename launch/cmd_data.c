/* `multipole prepare` and `multipole inspect`: thin wrappers over io/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "io/ckpt.h"
#include "io/data.h"
#include "io/listops.h"

static const char *const prepare_help =
    "usage: multipole prepare --in FILE... --out DATA.h5 [--val-fraction F] [--quiet]\n"
    "       multipole prepare listops --out LISTOPS.h5 [...]   (see prepare listops --help)\n"
    "\n"
    "Concatenate the bytes of the input files into an HDF5 token file\n"
    "(/tokens, /val/tokens; byte tokenizer, vocab_size 256). The last fraction F\n"
    "of the stream (default 0.01) becomes the validation split.\n";

static const char *const inspect_help =
    "usage: multipole inspect FILE.h5 [--verify]\n"
    "\n"
    "Describe a token file (sizes, attributes, frequent tokens, the first text)\n"
    "or a checkpoint (step, layout, config, tensors with shapes and norms).\n"
    "  --verify   checkpoints: recompute every checksum (Fletcher32 per chunk,\n"
    "             the per-group and whole-state sums); exit 2 when any is bad\n";

static const char *const prepare_listops_help =
    "usage: multipole prepare listops --out LISTOPS.h5 [--train N] [--val N] [--test N]\n"
    "                                 [--seed S] [--quiet]\n"
    "\n"
    "Generate Long Range Arena's ListOps task: nested [MIN [MAX [MED [SM ... ]\n"
    "expressions over digits 0-9, 501-1999 tokens each, no duplicates, labelled\n"
    "with their value 0-9. Writes /train, /val, /test (inputs uint8 (n, 2000)\n"
    "padded with 0, lengths, labels) and /vocab; deterministic for a seed.\n"
    "  --train N   training examples (default 96000)\n"
    "  --val N     validation examples (default 2000)\n"
    "  --test N    test examples (default 2000)\n"
    "  --seed S    random seed (default 0)\n"
    "  --quiet     no progress lines\n";

static int prepare_listops(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "prepare listops");
    mpl_listops_opts o = {NULL, 96000, 2000, 2000, 0, 1};
    static const char *const count_opt[3] = {"--train", "--val", "--test"};
    int64_t *count[3] = {&o.n_train, &o.n_val, &o.n_test};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        long long x = 0;
        int r, c;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(prepare_listops_help, stdout);
            return MPL_EXIT_OK;
        }
        if ((r = mpl_cli_opt(argc, argv, &i, "--out", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "--out needs a file");
            o.out = v;
            continue;
        }
        if (!strcmp(argv[i], "--quiet")) {
            o.verbose = 0;
            continue;
        }
        if ((r = mpl_cli_opt(argc, argv, &i, "--seed", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "--seed needs a number");
            if (mpl_cli_parse_i64("--seed", v, 0, 0x7fffffffffffffffLL, &x) != MPL_OK)
                return mpl_cli_error(&cli, MPL_EXIT_USAGE);
            o.seed = (uint64_t)x;
            continue;
        }
        for (c = 0; c < 3; c++)
            if ((r = mpl_cli_opt(argc, argv, &i, count_opt[c], &v))) break;
        if (c == 3) return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a count", count_opt[c]);
        if (mpl_cli_parse_i64(count_opt[c], v, 0, 1LL << 32, &x) != MPL_OK)
            return mpl_cli_error(&cli, MPL_EXIT_USAGE);
        *count[c] = x;
    }
    if (!o.out) return mpl_cli_usage(&cli, "no output file (--out LISTOPS.h5)");
    if (o.n_train + o.n_val + o.n_test < 1)
        return mpl_cli_usage(&cli, "no examples requested (--train, --val and --test are all 0)");
    if (cli.rank != 0) return MPL_EXIT_OK;
    if (mpl_listops_prepare(&o) != MPL_OK) return mpl_cli_error(&cli, MPL_EXIT_USAGE);
    if (o.verbose) printf("wrote %s\n", o.out);
    return MPL_EXIT_OK;
}

int mpl_cmd_prepare(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "listops")) return prepare_listops(argc - 1, argv + 1);

    mpl_cli cli;
    mpl_cli_init(&cli, "prepare");
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    if (!inputs) return MPL_EXIT_FAIL;
    mpl_data_prepare_opts o = {inputs, 0, NULL, 0.01, 1};
    int rc = MPL_EXIT_OK;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(prepare_help, stdout);
            goto done;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--out", &v))) {
            if (r < 0) { rc = mpl_cli_usage(&cli, "--out needs a file"); goto done; }
            o.out = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--val-fraction", &v))) {
            if (r < 0 || mpl_cli_parse_f64("--val-fraction", v, 0, 0.5, &o.val_fraction) != MPL_OK) {
                rc = r < 0 ? mpl_cli_usage(&cli, "--val-fraction needs a number")
                           : mpl_cli_error(&cli, MPL_EXIT_USAGE);
                goto done;
            }
        } else if (!strcmp(argv[i], "--quiet")) {
            o.verbose = 0;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--in", &v))) {
            if (r < 0) { rc = mpl_cli_usage(&cli, "--in needs a file"); goto done; }
            inputs[o.n_inputs++] = v;
            /* --in a b c: the following non-option words are inputs too */
            while (i + 1 < argc && argv[i + 1][0] != '-') inputs[o.n_inputs++] = argv[++i];
        } else {
            rc = mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
            goto done;
        }
    }
    if (o.n_inputs == 0) { rc = mpl_cli_usage(&cli, "no input files (--in FILE...)"); goto done; }
    if (!o.out) { rc = mpl_cli_usage(&cli, "no output file (--out DATA.h5)"); goto done; }
    if (cli.rank == 0) {
        if (mpl_data_prepare(&o) != MPL_OK) rc = mpl_cli_error(&cli, MPL_EXIT_USAGE);
        else if (o.verbose) printf("wrote %s\n", o.out);
    }
done:
    free(inputs);
    return rc;
}

int mpl_cmd_inspect(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "inspect");
    const char *path = NULL;
    int verify = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--verify")) {
            verify = 1;
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(inspect_help, stdout);
            return MPL_EXIT_OK;
        }
        if (argv[i][0] == '-' || path) return mpl_cli_usage(&cli, "unexpected argument '%s'", argv[i]);
        path = argv[i];
    }
    if (!path) return mpl_cli_usage(&cli, "no file given");
    if (cli.rank != 0) return MPL_EXIT_OK;
    /* --verify of a non-checkpoint fails there, naming what the file is not. */
    mpl_status st = verify                       ? mpl_ckpt_verify(path)
                    : mpl_ckpt_is_checkpoint(path) ? mpl_ckpt_inspect(path)
                                                   : mpl_data_inspect(path);
    return st == MPL_OK ? MPL_EXIT_OK : mpl_cli_error(&cli, MPL_EXIT_USAGE);
}
