/* libFuzzer target for the HDF5 readers on corrupted files: each input is
 * written to a file, which is then read as a token file (attributes, the
 * window reader, inspect) and as a checkpoint (is_checkpoint, the config
 * behind the root checksum, verify, inspect). Beyond "no crash, no leak,
 * no undefined behaviour" (ASan, LeakSanitizer, UBSan): every HDF5 object
 * our readers open is closed again (H5Fget_obj_count is 0 after each
 * input), and tokens a reader returns lie in [0, vocab_size) or the reader
 * said the file is bad. Build and run: scripts/fuzz.sh. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "io/ckpt.h"
#include "io/data.h"

static char path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/mpl-fuzz-%d.h5", dir ? dir : "/tmp", (int)getpid());
    /* inspect prints to stdout; libFuzzer reports on stderr */
    if (!freopen("/dev/null", "w", stdout)) return 1;
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

static void read_as_ckpt(void)
{
    if (!mpl_ckpt_is_checkpoint(path)) return;
    char *cfg = NULL;
    if (mpl_ckpt_read_config(path, &cfg) == MPL_OK) free(cfg);
    (void)mpl_ckpt_verify(path);
    (void)mpl_ckpt_inspect(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    read_as_tokens();
    read_as_ckpt();
    mpl_err_clear();
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) {
        fprintf(stderr, "an HDF5 object was left open\n");
        abort();
    }
    unlink(path);
    return 0;
}
