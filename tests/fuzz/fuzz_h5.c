/* libFuzzer target for the HDF5 readers on corrupted files: each input is
 * written to a file, which is then read as a token file (attributes, the
 * window reader, inspect) and as a checkpoint (is_checkpoint, the config
 * behind the root checksum, verify, inspect, and the load that train
 * --resume, eval and sample do: the model the saved config describes, when
 * it is small, loaded through mpl_ckpt_load on a one-rank world). Beyond
 * "no crash, no leak, no undefined behaviour" (ASan, LeakSanitizer,
 * UBSan): every HDF5 identifier our readers open (files, groups, datasets,
 * attributes, datatypes, dataspaces, property lists) is closed again.
 * Build and run: scripts/fuzz.sh. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include <mpi.h>
#include <sanitizer/lsan_interface.h>

#include "attention/registry.h"
#include "io/ckpt.h"
#include "io/data.h"
#include "launch/trainer.h"

static char path[256];
static mpl_comm *world;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/mpl-fuzz-%d.h5", dir ? dir : "/tmp", (int)getpid());
    H5open(); /* HDF5's own default identifiers exist before the first input */
    /* inspect prints to stdout; libFuzzer reports on stderr */
    if (!freopen("/dev/null", "w", stdout)) return 1;
    /* Open MPI keeps memory from its start-up that nothing points to, in
     * modules loaded and unloaded again, so no suppression by name catches
     * it: leaks are not tracked while it starts. */
    __lsan_disable();
    MPI_Init(NULL, NULL);
    if (mpl_comm_create_world(&world) != MPL_OK) return 1;
    /* Open MPI sets up its collectives on first use and keeps that memory:
     * use them once here, so leak checks per input see only the input's. */
    mpl_status st = MPL_OK;
    int64_t x = 0;
    const size_t big = (size_t)4 << 20; /* the large-message paths of a tensor bcast too */
    char *b = calloc(big, 1);
    if (!b || mpl_comm_agree(world, &st) != MPL_OK || mpl_comm_bcast(world, b, 8, 0) != MPL_OK ||
        mpl_comm_bcast(world, b, big, 0) != MPL_OK || mpl_comm_allreduce_max_i64(world, &x, 1) != MPL_OK)
        return 1;
    free(b);
    __lsan_enable();
    return 0;
}

static void read_as_tokens(void)
{
    mpl_data_info info;
    if (mpl_data_info_read(path, &info) != MPL_OK) return;
    for (int s = 0; s < 2; s++) {
        mpl_data_reader *r = NULL;
        const int64_t L = 7;
        if (mpl_data_reader_open(path, s ? "val" : "train", L, 1, &r) != MPL_OK) continue;
        int32_t buf[8];
        int64_t nw = mpl_data_reader_n_windows(r);
        int64_t gs[3] = {0, nw - 1, 3 * nw + 1};
        for (int k = 0; k < 3; k++) {
            if (mpl_data_reader_read(r, gs[k], 0, L + 1, buf) != MPL_OK) break;
            /* out-of-vocabulary ids are possible in a corrupt file; the
             * model refuses them, so only check they were read at all */
        }
        int64_t n = mpl_data_reader_n_tokens(r);
        if (n > 0) (void)mpl_data_reader_read_at(r, n - 1, 1, buf);
        mpl_data_reader_close(&r);
    }
    (void)mpl_data_inspect(path);
}

/* What train --resume, eval and sample do with a checkpoint: rebuild the
 * model from its config and load every tensor. */
static void load_as_model(const char *text)
{
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    if (mpl_config_load_text(&cfg, text, path) != MPL_OK || mpl_config_validate(&cfg) != MPL_OK)
        return;
    /* a damaged config may describe a huge model: only small ones are built */
    double n = (double)cfg.d_model * (double)cfg.d_model * (double)cfg.n_layer *
               (double)(4 + 2 * cfg.mlp_mult) + (double)cfg.vocab_size * (double)cfg.d_model;
    if (n > 1e6 || cfg.seq_len > 4096) return;
    mpl_attn_cfg acfg;
    mpl_model_cfg mcfg;
    mpl_trainer_attn_cfg(&cfg, &acfg);
    mpl_trainer_model_cfg(&cfg, &mcfg);
    mpl_attn attn = {0};
    mpl_model *m = NULL;
    float *mo = NULL, *v = NULL;
    if (mpl_attn_create(&acfg, NULL, &attn) == MPL_OK && mpl_model_create(&mcfg, &attn, &m) == MPL_OK) {
        int64_t ne = mpl_model_layout(m)->n_elems;
        if (mpl_slab_alloc(ne, &mo) == MPL_OK && mpl_slab_alloc(ne, &v) == MPL_OK) {
            mpl_ckpt_state s;
            (void)mpl_ckpt_load(world, path, mpl_model_layout(m), mpl_model_params(m), mo, v, &s,
                                NULL);
        }
    }
    mpl_slab_free(&mo);
    mpl_slab_free(&v);
    mpl_model_destroy(&m);
    mpl_attn_destroy(&attn);
}

static void read_as_ckpt(void)
{
    if (!mpl_ckpt_is_checkpoint(path)) return;
    char *cfg = NULL;
    if (mpl_ckpt_read_config(path, &cfg) == MPL_OK) {
        load_as_model(cfg);
        free(cfg);
    }
    (void)mpl_ckpt_verify(path);
    (void)mpl_ckpt_inspect(path);
}

/* Identifiers of the kinds our readers open, by kind. */
static const H5I_type_t kinds[] = {H5I_FILE,      H5I_GROUP,   H5I_DATATYPE, H5I_DATASPACE,
                                   H5I_DATASET,   H5I_ATTR,    H5I_GENPROP_LST};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

static void count_ids(hsize_t *n)
{
    for (size_t k = 0; k < N_KINDS; k++)
        if (H5Inmembers(kinds[k], &n[k]) < 0) n[k] = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsize_t before[N_KINDS], after[N_KINDS];
    count_ids(before);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    read_as_tokens();
    read_as_ckpt();
    mpl_err_clear();
    count_ids(after);
    for (size_t k = 0; k < N_KINDS; k++)
        if (after[k] > before[k]) {
            fprintf(stderr, "HDF5 identifiers of kind %d left open: %llu before, %llu after\n",
                    (int)kinds[k], (unsigned long long)before[k], (unsigned long long)after[k]);
            abort();
        }
    unlink(path);
    return 0;
}
