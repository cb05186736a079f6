/* `multipole prepare` and `multipole inspect`: thin wrappers over io/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "io/ckpt.h"
#include "io/data.h"
#include "io/clsdata.h"
#include "io/listops.h"
#include "progress.h"

static const char *const prepare_help =
    "usage: multipole prepare --in FILE... --out DATA.h5 [--tokenizer T] [--vocab-size V]\n"
    "                         [--text-bytes N] [--val-fraction F] [--quiet]\n"
    "       multipole prepare listops --out LISTOPS.h5 [...]   (see prepare listops --help)\n"
    "\n"
    "Turn the input files, concatenated in order, into an HDF5 token file\n"
    "(/tokens, /val/tokens); the last fraction F of the tokens (default 0.01)\n"
    "becomes the validation split. The tokenizer T is recorded in the file:\n"
    "  bytes    (default) every byte is a token, vocab_size 256\n"
    "  dna      FASTA: '>' header lines and line breaks skipped, A C G T N are\n"
    "           ids 0-4 (vocab_size 5), lower case folded to upper case (soft-\n"
    "           masking is dropped), other IUPAC codes stored as N\n"
    "  uint16   pre-tokenised ids, raw little-endian uint16 (nanoGPT's train.bin)\n"
    "  uint32   the same with uint32 ids\n"
    "  --vocab-size V   uint16/uint32: the ids' vocabulary (required; every id < V)\n"
    "  --text-bytes N   uint16/uint32: bytes of text the ids came from, so that\n"
    "                   eval can report bits per byte (default: unknown)\n"
    "  --quiet          no progress and no summary\n";

static const char *const inspect_help =
    "usage: multipole inspect FILE.h5 [--verify]\n"
    "\n"
    "Describe a token file (sizes, attributes, frequent tokens, the first text)\n"
    "or a checkpoint (step, layout, config, tensors with shapes and norms).\n"
    "  --verify   checkpoints: recompute every checksum (Fletcher32 per chunk,\n"
    "             the per-group and whole-state sums); exit 2 when any is bad\n";

static const char *const prepare_listops_help =
    "usage: multipole prepare listops --out LISTOPS.h5 [--train N] [--val N] [--test N]\n"
    "                                 [--seed S] [--min-tokens A --max-tokens B] [--quiet]\n"
    "\n"
    "Generate Long Range Arena's ListOps task: nested [MIN [MAX [MED [SM ... ]\n"
    "expressions over digits 0-9, 501-1999 tokens each, no duplicates, labelled\n"
    "with their value 0-9. Writes /train, /val, /test (inputs uint8 (n, 2000)\n"
    "padded with 0, lengths, labels) and /vocab; deterministic for a seed.\n"
    "  --train N   training examples (default 96000)\n"
    "  --val N     validation examples (default 2000)\n"
    "  --test N    test examples (default 2000)\n"
    "  --seed S    random seed (default 0)\n"
    "  --min-tokens A, --max-tokens B\n"
    "              keep trees of A..B tokens instead (rows B + 1 wide): a\n"
    "              smaller task for quick runs and tests, not LRA's\n"
    "  --quiet     no progress lines\n";

static int prepare_listops(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "prepare listops");
    mpl_listops_opts o = {NULL, 96000, 2000, 2000, 0, 1, 0, 0};
    static const char *const count_opt[5] = {"--train", "--val", "--test", "--min-tokens",
                                             "--max-tokens"};
    int64_t *count[5] = {&o.n_train, &o.n_val, &o.n_test, &o.min_tokens, &o.max_tokens};
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
                return mpl_cli_arg_error(&cli);
            o.seed = (uint64_t)x;
            continue;
        }
        for (c = 0; c < 5; c++)
            if ((r = mpl_cli_opt(argc, argv, &i, count_opt[c], &v))) break;
        if (c == 5) return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        if (r < 0) return mpl_cli_usage(&cli, "%s needs a count", count_opt[c]);
        if (mpl_cli_parse_i64(count_opt[c], v, c < 3 ? 0 : 1, c < 3 ? 1LL << 32 : 1999, &x) !=
            MPL_OK)
            return mpl_cli_arg_error(&cli);
        *count[c] = x;
    }
    if (!o.out) return mpl_cli_usage(&cli, "no output file (--out LISTOPS.h5)");
    if (o.n_train + o.n_val + o.n_test < 1)
        return mpl_cli_usage(&cli, "no examples requested (--train, --val and --test are all 0)");
    int rc = MPL_EXIT_OK;
    if (cli.rank == 0 && mpl_listops_prepare(&o) != MPL_OK) rc = mpl_cli_error(&cli, MPL_EXIT_USAGE);
    else if (cli.rank == 0 && o.verbose) printf("wrote %s\n", o.out);
    return mpl_cli_rank0_rc(&cli, rc);
}

/* The progress callback of mpl_data_prepare: a bar on a terminal. */
static void prepare_progress(void *ctx, int64_t done, int64_t total)
{
    if (total < ((int64_t)64 << 20)) return; /* small inputs take a moment */
    char bar[64];
    mpl_fmt_bar(total > 0 ? (double)done / (double)total : 1, 30, bar, sizeof bar);
    mpl_progress_report(ctx, done == total, "prepare %s %lld / %lld MiB (%.0f%%)", bar,
                        (long long)(done >> 20), (long long)(total >> 20),
                        total > 0 ? 100.0 * (double)done / (double)total : 100.0);
}

/* --tokenizer NAME into o (bytes, dna, uint16, uint32). */
static int parse_tokenizer(const mpl_cli *cli, const char *v, mpl_data_prepare_opts *o)
{
    if (!strcmp(v, "bytes")) o->tokenizer = MPL_TOKENIZER_BYTES;
    else if (!strcmp(v, "dna")) o->tokenizer = MPL_TOKENIZER_DNA;
    else if (!strcmp(v, "uint16") || !strcmp(v, "uint32")) {
        o->tokenizer = MPL_TOKENIZER_IDS;
        o->id_bytes = v[4] == '1' ? 2 : 4;
    } else {
        return mpl_cli_usage(cli, "--tokenizer '%s' is not one of bytes, dna, uint16, uint32", v);
    }
    return 0;
}

int mpl_cmd_prepare(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "listops")) return prepare_listops(argc - 1, argv + 1);

    mpl_cli cli;
    mpl_cli_init(&cli, "prepare");
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    if (!inputs) return MPL_EXIT_FAIL;
    mpl_data_prepare_opts o = {.inputs = inputs, .val_fraction = 0.01, .verbose = 1};
    long long vocab = 0, text_bytes = 0;
    int rc = MPL_EXIT_OK, vocab_given = 0;
    for (int i = 1; i < argc && rc == MPL_EXIT_OK; i++) {
        const char *v = NULL;
        int r;
        mpl_status st = MPL_OK;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(prepare_help, stdout);
            goto done;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--out", &v))) {
            o.out = v;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--val-fraction", &v))) {
            if (r > 0) st = mpl_cli_parse_f64("--val-fraction", v, 0, 0.5, &o.val_fraction);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--tokenizer", &v))) {
            if (r > 0) rc = parse_tokenizer(&cli, v, &o);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--vocab-size", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--vocab-size", v, 2, 1ll << 32, &vocab);
            vocab_given = 1;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--text-bytes", &v))) {
            if (r > 0) st = mpl_cli_parse_i64("--text-bytes", v, 0, 1ll << 62, &text_bytes);
        } else if (!strcmp(argv[i], "--quiet")) {
            r = 1;
            o.verbose = 0;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--in", &v))) {
            if (r > 0) inputs[o.n_inputs++] = v;
            /* --in a b c: the following non-option words are inputs too */
            while (r > 0 && i + 1 < argc && argv[i + 1][0] != '-') inputs[o.n_inputs++] = argv[++i];
        } else {
            rc = mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
            break;
        }
        if (r < 0) rc = mpl_cli_usage(&cli, "%s needs a value", argv[i]);
        else if (st != MPL_OK) rc = mpl_cli_arg_error(&cli);
    }
    if (rc != MPL_EXIT_OK) goto done;
    if (o.n_inputs == 0) { rc = mpl_cli_usage(&cli, "no input files (--in FILE...)"); goto done; }
    if (!o.out) { rc = mpl_cli_usage(&cli, "no output file (--out DATA.h5)"); goto done; }
    if (o.tokenizer == MPL_TOKENIZER_IDS && !vocab_given) {
        rc = mpl_cli_usage(&cli, "--tokenizer uint%d needs --vocab-size V (the ids' vocabulary, "
                           "e.g. 50257 for GPT-2)", 8 * o.id_bytes);
        goto done;
    }
    if (o.tokenizer != MPL_TOKENIZER_IDS && (vocab_given || text_bytes)) {
        rc = mpl_cli_usage(&cli, "--vocab-size and --text-bytes are for --tokenizer uint16/uint32 "
                           "(%s fixes its vocabulary)", mpl_tokenizer_name(o.tokenizer));
        goto done;
    }
    o.vocab_size = vocab;
    o.text_bytes = text_bytes;
    mpl_progress prog;
    mpl_progress_init(&prog, stderr, !o.verbose);
    prog.plain_interval = 5;
    o.progress = prepare_progress;
    o.progress_ctx = &prog;
    if (cli.rank == 0) {
        mpl_status st = mpl_data_prepare(&o);
        mpl_progress_end(&prog);
        if (st != MPL_OK) rc = mpl_cli_error(&cli, MPL_EXIT_USAGE);
        else if (o.verbose) printf("wrote %s\n", o.out);
    }
    rc = mpl_cli_rank0_rc(&cli, rc);
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
    int rc = MPL_EXIT_OK;
    if (cli.rank == 0) {
        /* --verify of a non-checkpoint fails there, naming what the file is not. */
        mpl_status st = verify                       ? mpl_ckpt_verify(path)
                        : mpl_ckpt_is_checkpoint(path) ? mpl_ckpt_inspect(path)
                        : mpl_cls_is_dataset(path)     ? mpl_cls_inspect(path)
                                                       : mpl_data_inspect(path);
        if (st != MPL_OK) rc = mpl_cli_error(&cli, MPL_EXIT_USAGE);
    }
    return mpl_cli_rank0_rc(&cli, rc);
}
