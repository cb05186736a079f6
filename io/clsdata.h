/* Classification datasets, read side: the format `multipole prepare
 * listops` writes (io/listops.h): /<split>/inputs (n, max_len) token ids
 * padded with 0, /<split>/lengths, /<split>/labels, root attributes
 * vocab_size and n_classes. A sample is one example: its max_len tokens,
 * the mask of its real ones (position < length) and its label. Training
 * visits examples in the seeded per-epoch order of sample_order.h; each
 * rank reads only its own slice of each example's row (one hyperslab). */
#ifndef MPL_CLSDATA_H
#define MPL_CLSDATA_H

#include <stdint.h>

#include "../core/status.h"

typedef struct mpl_cls_reader mpl_cls_reader;

typedef struct mpl_cls_info {
    int64_t n;           /* examples in the split */
    int64_t max_len;     /* tokens per row */
    int64_t vocab_size;
    int64_t n_classes;
    char tokenizer[32];  /* the file's `tokenizer` attribute ("listops") */
} mpl_cls_info;

/* Local. 1 when path is an HDF5 file holding a classification dataset
 * (a /train/labels dataset). */
int mpl_cls_is_dataset(const char *path);

/* Local. Open split ("train", "val" or "test") read-only; lengths and
 * labels are read whole. MPL_ERR_FORMAT naming the file and the part when
 * it is not such a file, the split is absent or empty, or a length or
 * label is out of range. */
mpl_status mpl_cls_reader_open(const char *path, const char *split, uint64_t seed,
                               mpl_cls_reader **out);
/* Local. */
void mpl_cls_reader_close(mpl_cls_reader **r);
/* Local. */
mpl_cls_info mpl_cls_reader_info(const mpl_cls_reader *r);
/* Local. The example of global sample g (the seeded order). */
int64_t mpl_cls_reader_example_of(mpl_cls_reader *r, int64_t g);
/* Local. Positions [start, start + count) of example e (0 <= e < n,
 * start + count <= max_len): token ids into tok, 1 (real) or 0 (padding)
 * into mask, and the example's label into *label. */
mpl_status mpl_cls_reader_read(mpl_cls_reader *r, int64_t e, int64_t start, int64_t count,
                               int32_t *tok, uint8_t *mask, int32_t *label);

/* Local. Print a classification file's splits to stdout: examples, row
 * width, lengths (min/mean/max) and the share of each class. */
mpl_status mpl_cls_inspect(const char *path);

#endif
