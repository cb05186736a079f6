/* libFuzzer target for the text parsers: the INI config reader (the same
 * code reads config files, --set and the config saved in checkpoints), the
 * FASTA encoder and the prompt encoder of every tokenizer. Properties
 * checked beyond "no crash, no leak, no undefined behaviour":
 *  - a config that parses prints as text that parses again to the same text;
 *  - the FASTA encoder writes at most one id per input byte, each < 5, and
 *    gives the same ids when its input is cut in two anywhere.
 * Build and run: scripts/fuzz.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/data_tokenizer.h"
#include "launch/config.h"

static void check_config(const char *text)
{
    mpl_config c, d;
    mpl_config_defaults(&c);
    if (mpl_config_load_text(&c, text, "fuzz") != MPL_OK) return;
    (void)mpl_config_validate(&c);
    mpl_err_clear();
    char *out = mpl_config_to_text(&c);
    if (!out) return;
    mpl_config_defaults(&d);
    if (mpl_config_load_text(&d, out, "round trip") != MPL_OK) {
        mpl_err_print(stderr, "round trip: ");
        abort(); /* what we print must read back */
    }
    char *out2 = mpl_config_to_text(&d);
    if (!out2 || strcmp(out, out2) != 0) abort();
    free(out2);
    free(out);
}

static void check_dna(const uint8_t *data, size_t size)
{
    uint8_t *a = malloc(size + 1), *b = malloc(size + 1);
    mpl_dna_state s;
    int64_t na = 0, nb1 = 0, nb2 = 0;
    mpl_dna_state_init(&s);
    mpl_status st = mpl_dna_feed(&s, "fuzz", data, (int64_t)size, a, &na);
    if (na < 0 || (size_t)na > size) abort();
    for (int64_t i = 0; st == MPL_OK && i < na; i++)
        if (a[i] >= MPL_DNA_VOCAB) abort();
    size_t cut = size ? data[0] % (size + 1) : 0;
    mpl_dna_state_init(&s);
    mpl_status st1 = mpl_dna_feed(&s, "fuzz", data, (int64_t)cut, b, &nb1);
    mpl_status st2 = st1 == MPL_OK ? mpl_dna_feed(&s, "fuzz", data + cut, (int64_t)(size - cut),
                                                  b + nb1, &nb2)
                                   : st1;
    if ((st == MPL_OK) != (st2 == MPL_OK)) abort();
    if (st == MPL_OK && (na != nb1 + nb2 || memcmp(a, b, (size_t)na) != 0)) abort();
    mpl_err_clear();
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    check_config(text);
    /* --set key=value on the first line */
    mpl_config c;
    mpl_config_defaults(&c);
    char *nl = strchr(text, '\n');
    if (nl) *nl = '\0';
    (void)mpl_config_set_arg(&c, text);
    mpl_err_clear();
    check_dna(data, size);
    for (int t = 0; t < MPL_TOKENIZER_COUNT; t++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        int64_t V = t == MPL_TOKENIZER_DNA ? MPL_DNA_VOCAB : t == MPL_TOKENIZER_IDS ? 50257 : 256;
        if (mpl_tokenizer_encode((mpl_tokenizer)t, V, (const char *)data, size, &ids, &n) == MPL_OK) {
            for (int64_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= V) abort();
            char buf[32];
            for (int64_t i = 0; i < n; i++) (void)mpl_tokenizer_decode((mpl_tokenizer)t, ids[i], buf, sizeof buf);
        }
        free(ids);
        mpl_err_clear();
    }
    free(text);
    return 0;
}
