/* Tokenizers of token files (see data_tokenizer.h): names, the streaming
 * FASTA encoder, prompt encoding and id decoding. Apart from the HDF5 code
 * because `sample` uses it without a token file. */
#include "data_tokenizer.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[MPL_TOKENIZER_COUNT] = {"bytes", "dna", "ids"};

const char *mpl_tokenizer_name(mpl_tokenizer t)
{
    return (unsigned)t < MPL_TOKENIZER_COUNT ? names[t] : "?";
}

mpl_status mpl_tokenizer_parse(const char *name, mpl_tokenizer *out)
{
    for (int i = 0; i < MPL_TOKENIZER_COUNT; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (mpl_tokenizer)i;
            return MPL_OK;
        }
    return mpl_err(MPL_ERR_ARG, "tokenizer '%s' is not one of bytes, dna, ids",
                   name ? name : "(null)");
}

/* id of a base letter (either case), 4 (N) for the other IUPAC codes, -1
 * for whitespace, -2 for anything else. */
static int dna_code(unsigned char c)
{
    switch (c) {
    case 'A': case 'a': return 0;
    case 'C': case 'c': return 1;
    case 'G': case 'g': return 2;
    case 'T': case 't': return 3;
    case 'N': case 'n': return 4;
    case ' ': case '\t': case '\r': case '\n': case '\v': case '\f': return -1;
    default: break;
    }
    return strchr("RYSWKMBDHVryswkmbdhv", c) && c ? 5 : -2;
}

void mpl_dna_state_init(mpl_dna_state *s)
{
    memset(s, 0, sizeof *s);
    s->line_start = 1;
    s->line = 1;
}

mpl_status mpl_dna_feed(mpl_dna_state *s, const char *path, const unsigned char *in, int64_t n,
                        uint8_t *out, int64_t *n_out)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++, s->offset++) {
        unsigned char c = in[i];
        int start = s->line_start;
        s->line_start = c == '\n';
        if (c == '\n') s->line++;
        if (start && (c == '>' || c == ';')) s->in_header = 1;
        if (s->in_header) {
            if (c == '\n') s->in_header = 0;
            continue;
        }
        int code = dna_code(c);
        if (code == -1) continue;
        if (code == -2) {
            char shown[8];
            if (isprint(c)) snprintf(shown, sizeof shown, "%c", c);
            else snprintf(shown, sizeof shown, "\\x%02x", c);
            *n_out = k;
            return mpl_err(MPL_ERR_FORMAT,
                           "%s:%lld: byte %lld: '%s' is not a FASTA base (A C G T N or an "
                           "IUPAC code); is this FASTA? (--tokenizer bytes reads any file)",
                           path, (long long)s->line, (long long)s->offset, shown);
        }
        if (code == 5) {
            s->n_ambiguous++;
            code = 4;
        }
        if (out) out[k] = (uint8_t)code;
        k++;
    }
    s->n_bases += k;
    *n_out = k;
    return MPL_OK;
}

mpl_status mpl_tokenizer_encode(mpl_tokenizer t, int64_t V, const char *text, size_t n_bytes,
                                int32_t **ids, int64_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    int32_t *o = malloc((n_bytes ? n_bytes : 1) * sizeof *o);
    if (!o) return mpl_err(MPL_ERR_NOMEM, "out of memory for a prompt of %zu bytes", n_bytes);
    int64_t k = 0;
    const unsigned char *u = (const unsigned char *)text;
    switch (t) {
    case MPL_TOKENIZER_BYTES:
        for (size_t i = 0; i < n_bytes; i++) o[k++] = u[i];
        break;
    case MPL_TOKENIZER_DNA:
        for (size_t i = 0; i < n_bytes; i++) {
            int c = dna_code(u[i]);
            if (c == -1) continue;
            if (c == -2) {
                free(o);
                return mpl_err(MPL_ERR_ARG, "prompt byte %zu: '%c' is not a DNA base "
                               "(A C G T N)", i, isprint(u[i]) ? u[i] : '?');
            }
            o[k++] = c == 5 ? 4 : c;
        }
        break;
    case MPL_TOKENIZER_IDS:
        for (size_t i = 0; i < n_bytes;) {
            if (isspace(u[i]) || u[i] == ',') {
                i++;
                continue;
            }
            if (!isdigit(u[i])) {
                free(o);
                return mpl_err(MPL_ERR_ARG, "prompt byte %zu: '%c': a prompt of token ids is "
                               "decimal numbers separated by spaces", i,
                               isprint(u[i]) ? u[i] : '?');
            }
            long long v = 0;
            size_t j = i;
            for (; j < n_bytes && isdigit(u[j]); j++)
                if (v <= V) v = v * 10 + (u[j] - '0'); /* stops growing once too big */
            if (v >= V) {
                free(o);
                return mpl_err(MPL_ERR_ARG, "prompt token id %.*s is not below vocab_size %lld",
                               (int)(j - i), text + i, (long long)V);
            }
            o[k++] = (int32_t)v;
            i = j;
        }
        break;
    default:
        free(o);
        return mpl_err(MPL_ERR_ARG, "unknown tokenizer %d", (int)t);
    }
    if (t != MPL_TOKENIZER_IDS)
        for (int64_t i = 0; i < k; i++)
            if (o[i] >= V) {
                int32_t bad = o[i];
                free(o);
                return mpl_err(MPL_ERR_ARG, "prompt token %d is not below the model's "
                               "vocab_size %lld", bad, (long long)V);
            }
    *ids = o;
    *n_ids = k;
    return MPL_OK;
}

size_t mpl_tokenizer_decode(mpl_tokenizer t, int32_t id, char *buf, size_t n)
{
    int w;
    switch (t) {
    case MPL_TOKENIZER_BYTES:
        buf[0] = (char)(id >= 0 && id < 256 ? id : '?');
        buf[1] = '\0';
        return 1;
    case MPL_TOKENIZER_DNA:
        buf[0] = id >= 0 && id < MPL_DNA_VOCAB ? "ACGTN"[id] : '?';
        buf[1] = '\0';
        return 1;
    default:
        w = snprintf(buf, n, "%d ", id);
        return w < 0 ? 0 : (size_t)w < n ? (size_t)w : n - 1;
    }
}
