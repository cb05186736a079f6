/* Token files from inputs other than bytes: raw little-endian uint16 and
 * uint32 ids and FASTA (dna) round-trip through prepare and the reader
 * exactly (train head, val tail, stored width), the FASTA encoder gives
 * the same ids however its input is cut into blocks, prompts encode and
 * decode back, and bad inputs fail naming the file and the position. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/philox.h"
#include "core/status.h"
#include "io/data.h"
#include "tests/testutil.h"

static char *dir;

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void expect_err(mpl_status st, mpl_status want, const char *frag)
{
    const char *cause = mpl_err_cause();
    printf("  expected error: %s\n", cause);
    assert_int_equal(st, want);
    assert_non_null(strstr(cause, frag));
    mpl_err_clear();
}

/* Both splits of path, concatenated, into a new array; checks the sizes. */
static int32_t *read_all(const char *path, int64_t n_want, int64_t *n_val)
{
    mpl_data_info info;
    assert_int_equal(mpl_data_info_read(path, &info), MPL_OK);
    assert_int_equal(info.n_tokens + info.n_val_tokens, n_want);
    int32_t *all = malloc((size_t)n_want * sizeof *all);
    mpl_data_reader *r = NULL;
    assert_int_equal(mpl_data_reader_open(path, "train", 1, 1, &r), MPL_OK);
    assert_int_equal(mpl_data_reader_n_tokens(r), info.n_tokens);
    assert_int_equal(mpl_data_reader_read_at(r, 0, info.n_tokens, all), MPL_OK);
    mpl_data_reader_close(&r);
    if (info.n_val_tokens > 1) {
        assert_int_equal(mpl_data_reader_open(path, "val", 1, 1, &r), MPL_OK);
        assert_int_equal(mpl_data_reader_read_at(r, 0, info.n_val_tokens, all + info.n_tokens),
                         MPL_OK);
        mpl_data_reader_close(&r);
    }
    *n_val = info.n_val_tokens;
    return all;
}

/* Bytes per element of /tokens as stored. */
static size_t stored_width(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hid_t t = H5Dget_type(d);
    size_t w = H5Tget_size(t);
    H5Tclose(t), H5Dclose(d), H5Fclose(f);
    return w;
}

/* n ids below V, little-endian width w, split over two files; prepare;
 * read back. Ids include 0 and V-1. */
static void roundtrip_ids(int w, int64_t V, int64_t n, size_t want_width)
{
    uint64_t seed = mpl_test_seed();
    unsigned char *raw = malloc((size_t)(n * w));
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)(mpl_philox_uniform(seed, 11, (uint64_t)i) * (double)V);
        if (i == 3) v = 0;
        if (i == n - 2) v = (uint32_t)(V - 1);
        ids[i] = (int32_t)v;
        for (int b = 0; b < w; b++) raw[i * w + b] = (unsigned char)(v >> (8 * b));
    }
    char a[4096], b[4096], out[4096];
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(b, sizeof b, "%s/b.bin", dir);
    snprintf(out, sizeof out, "%s/ids.h5", dir);
    int64_t cut = (n / 3) * w;
    write_file(a, raw, (size_t)cut);
    write_file(b, raw + cut, (size_t)(n * w - cut));
    const char *in[2] = {a, b};
    mpl_data_prepare_opts o = {.inputs = in, .n_inputs = 2, .out = out, .val_fraction = 0.1,
                               .tokenizer = MPL_TOKENIZER_IDS, .id_bytes = w, .vocab_size = V,
                               .text_bytes = 3 * n};
    assert_int_equal(mpl_data_prepare(&o), MPL_OK);
    mpl_data_info info;
    assert_int_equal(mpl_data_info_read(out, &info), MPL_OK);
    assert_string_equal(info.tokenizer, "ids");
    assert_int_equal(info.vocab_size, V);
    assert_int_equal(info.text_bytes, 3 * n);
    assert_int_equal(stored_width(out), want_width);
    int64_t n_val;
    int32_t *back = read_all(out, n, &n_val);
    assert_int_equal(n_val, (int64_t)(0.1 * (double)n + 0.5));
    assert_memory_equal(back, ids, (size_t)n * sizeof *ids);
    printf("uint%d V=%lld: %lld ids round-trip, stored %zu bytes each\n", 8 * w, (long long)V,
           (long long)n, want_width);
    free(back), free(ids), free(raw);
}

static void test_io_data_formats_uint16(void **st)
{
    (void)st;
    roundtrip_ids(2, 50257, 20011, 2);
    roundtrip_ids(2, 65536, 5003, 2);
    roundtrip_ids(2, 200, 4001, 1); /* a small vocabulary is stored as uint8 */
}

static void test_io_data_formats_uint32(void **st)
{
    (void)st;
    roundtrip_ids(4, 100003, 20011, 4);
    roundtrip_ids(4, 1000, 3001, 2);
}

/* Random bases rendered as FASTA with headers, comments, random line
 * widths, mixed case, CRLF, blank lines and IUPAC codes; the expected ids
 * are kept while rendering. */
static size_t make_fasta(char *txt, size_t cap, int32_t *ids, int64_t *n_ids, uint64_t seed)
{
    static const char up[] = "ACGTN", iupac[] = "RYSWKMBDHV";
    size_t k = 0;
    int64_t n = 0;
    uint64_t c = 0;
#define U() mpl_philox_uniform(seed, 21, c++)
    for (int rec = 0; rec < 5; rec++) {
        k += (size_t)snprintf(txt + k, cap - k, rec == 2 ? ";comment ACGT\n" : ">seq%d some description ACGT\n", rec);
        int width = 20 + (int)(U() * 60);
        int64_t len = 300 + (int64_t)(U() * 3000);
        for (int64_t i = 0; i < len; i++) {
            double u = U();
            int id = (int)(U() * 5);
            char ch = up[id];
            if (u < 0.02) {
                ch = iupac[(int)(U() * 10)];
                id = 4;
            }
            if (U() < 0.3) ch = (char)(ch - 'A' + 'a');
            txt[k++] = ch;
            ids[n++] = id;
            if ((i + 1) % width == 0 || i + 1 == len) {
                if (U() < 0.3) txt[k++] = '\r';
                txt[k++] = '\n';
                if (U() < 0.05) txt[k++] = '\n';
            }
        }
    }
#undef U
    MPL_ASSERT(k < cap);
    *n_ids = n;
    return k;
}

static void test_io_data_formats_dna(void **st)
{
    (void)st;
    uint64_t seed = mpl_test_seed();
    size_t cap = 1 << 16;
    char *txt = malloc(cap);
    int32_t *ids = malloc(cap * sizeof *ids);
    int64_t n;
    size_t len = make_fasta(txt, cap, ids, &n, seed);

    /* The encoder fed in random pieces equals the expected ids. */
    uint8_t *got = malloc(len);
    mpl_dna_state s;
    mpl_dna_state_init(&s);
    int64_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t piece = 1 + (size_t)(mpl_philox_uniform(seed, 22, i) * 40);
        if (piece > len - i) piece = len - i;
        int64_t m = 0;
        assert_int_equal(mpl_dna_feed(&s, "x.fa", (const unsigned char *)txt + i, (int64_t)piece,
                                      got + k, &m), MPL_OK);
        k += m;
        i += piece;
    }
    assert_int_equal(k, n);
    for (int64_t i = 0; i < n; i++) assert_int_equal(got[i], ids[i]);

    char fa[4096], out[4096];
    snprintf(fa, sizeof fa, "%s/g.fa", dir);
    snprintf(out, sizeof out, "%s/dna.h5", dir);
    write_file(fa, txt, len);
    const char *in[1] = {fa};
    mpl_data_prepare_opts o = {.inputs = in, .n_inputs = 1, .out = out, .val_fraction = 0.05,
                               .tokenizer = MPL_TOKENIZER_DNA};
    assert_int_equal(mpl_data_prepare(&o), MPL_OK);
    mpl_data_info info;
    assert_int_equal(mpl_data_info_read(out, &info), MPL_OK);
    assert_string_equal(info.tokenizer, "dna");
    assert_int_equal(info.vocab_size, MPL_DNA_VOCAB);
    assert_int_equal(info.text_bytes, n);
    assert_int_equal(stored_width(out), 1);
    int64_t n_val;
    int32_t *back = read_all(out, n, &n_val);
    assert_memory_equal(back, ids, (size_t)n * sizeof *ids);
    printf("dna: %lld bases of %zu FASTA bytes round-trip (%lld val)\n", (long long)n, len,
           (long long)n_val);

    /* A byte that is no base: the error names file, line and byte. */
    const char bad[] = ">h\nACGT\nAC-GT\n";
    write_file(fa, bad, sizeof bad - 1);
    expect_err(mpl_data_prepare(&o), MPL_ERR_FORMAT, "g.fa:3: byte 10: '-' is not a FASTA base");
    assert_int_not_equal(access(out, F_OK), -1); /* the old file is untouched */
    write_file(fa, ">only a header\n", 15);
    expect_err(mpl_data_prepare(&o), MPL_ERR_ARG, "no input bases");
    free(back), free(got), free(ids), free(txt);
}

static void test_io_data_formats_errors(void **st)
{
    (void)st;
    char a[4096], out[4096];
    snprintf(a, sizeof a, "%s/odd.bin", dir);
    snprintf(out, sizeof out, "%s/bad.h5", dir);
    const char *in[1] = {a};
    mpl_data_prepare_opts o = {.inputs = in, .n_inputs = 1, .out = out, .val_fraction = 0,
                               .tokenizer = MPL_TOKENIZER_IDS, .id_bytes = 2, .vocab_size = 1000};
    write_file(a, "abc", 3);
    expect_err(mpl_data_prepare(&o), MPL_ERR_FORMAT, "3 bytes is not a whole number of uint16");
    const unsigned char ids[8] = {1, 0, 231, 3, 232, 3, 0, 0}; /* 1, 999, 1000, 0 */
    write_file(a, ids, 8);
    expect_err(mpl_data_prepare(&o), MPL_ERR_FORMAT, "token id 1000 at index 2 is not below --vocab-size 1000");
    assert_int_equal(access(out, F_OK), -1);
    o.vocab_size = 70000;
    expect_err(mpl_data_prepare(&o), MPL_ERR_ARG, "must be in [2, 65536] for uint16");
    o.vocab_size = 1001;
    assert_int_equal(mpl_data_prepare(&o), MPL_OK);
}

static void test_io_data_formats_prompts(void **st)
{
    (void)st;
    const struct {
        mpl_tokenizer t;
        int64_t V;
        const char *text;
        int n;
        int32_t ids[8];
    } cases[] = {
        {MPL_TOKENIZER_BYTES, 256, "hi\n", 3, {'h', 'i', '\n'}},
        {MPL_TOKENIZER_DNA, 5, "ACgt N\nr", 6, {0, 1, 2, 3, 4, 4}},
        {MPL_TOKENIZER_IDS, 50257, " 15496, 11 995\n50256", 4, {15496, 11, 995, 50256}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        assert_int_equal(mpl_tokenizer_encode(cases[c].t, cases[c].V, cases[c].text,
                                              strlen(cases[c].text), &ids, &n), MPL_OK);
        assert_int_equal(n, cases[c].n);
        assert_memory_equal(ids, cases[c].ids, (size_t)n * sizeof *ids);
        /* decode, then encode again: the same ids */
        char text[256] = "", buf[32];
        size_t len = 0;
        for (int64_t i = 0; i < n; i++) {
            size_t m = mpl_tokenizer_decode(cases[c].t, ids[i], buf, sizeof buf);
            memcpy(text + len, buf, m);
            len += m;
        }
        int32_t *again = NULL;
        int64_t n2 = 0;
        assert_int_equal(mpl_tokenizer_encode(cases[c].t, cases[c].V, text, len, &again, &n2),
                         MPL_OK);
        assert_int_equal(n2, n);
        assert_memory_equal(again, ids, (size_t)n * sizeof *ids);
        printf("%s: '%.*s' -> %lld ids -> '%.*s'\n", mpl_tokenizer_name(cases[c].t),
               (int)strcspn(cases[c].text, "\n"), cases[c].text, (long long)n,
               (int)strcspn(text, "\n"), text);
        free(ids), free(again);
    }
    int32_t *ids = NULL;
    int64_t n;
    expect_err(mpl_tokenizer_encode(MPL_TOKENIZER_IDS, 100, "5 100", 5, &ids, &n), MPL_ERR_ARG,
               "prompt token id 100 is not below vocab_size 100");
    expect_err(mpl_tokenizer_encode(MPL_TOKENIZER_IDS, 100, "5 x", 3, &ids, &n), MPL_ERR_ARG,
               "decimal numbers");
    expect_err(mpl_tokenizer_encode(MPL_TOKENIZER_DNA, 5, "ACXG", 4, &ids, &n), MPL_ERR_ARG,
               "'X' is not a DNA base");
    expect_err(mpl_tokenizer_encode(MPL_TOKENIZER_BYTES, 100, "ab\xff", 3, &ids, &n),
               MPL_ERR_ARG, "prompt token 255 is not below the model's vocab_size 100");
}

static int setup(void **state)
{
    (void)state;
    dir = mpl_test_tmpdir("io_data_formats");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = mpl_test_rmtree(dir);
    free(dir);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_data_formats_uint16),
        cmocka_unit_test(test_io_data_formats_uint32),
        cmocka_unit_test(test_io_data_formats_dna),
        cmocka_unit_test(test_io_data_formats_errors),
        cmocka_unit_test(test_io_data_formats_prompts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
