/* The tokenizers a token file can record (attribute `tokenizer`) and how
 * their ids map to text and back, for `prepare` (input files -> ids),
 * `sample` (prompt -> ids, ids -> text) and `eval` (bits per byte):
 *
 *   bytes  every byte of the input is one token, id = byte value (V = 256).
 *   dna    FASTA in: lines starting with '>' (headers) or ';' (comments)
 *          and all whitespace are skipped; A C G T N are ids 0 1 2 3 4
 *          (V = 5). Case is folded: lower-case (soft-masked) bases get the
 *          ids of upper-case ones, so the mask is not kept. The other IUPAC
 *          ambiguity codes (R Y S W K M B D H V, either case) become N and
 *          are counted; any other character is an error naming the file,
 *          line and byte.
 *   ids    pre-tokenised input: a raw little-endian uint16 or uint32 array
 *          of token ids (the nanoGPT train.bin convention), every id below
 *          the given vocab_size; text is written as decimal ids separated
 *          by spaces (the ids' own tokenizer is not known here).
 */
#ifndef MPL_DATA_TOKENIZER_H
#define MPL_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

typedef enum mpl_tokenizer {
    MPL_TOKENIZER_BYTES = 0,
    MPL_TOKENIZER_DNA,
    MPL_TOKENIZER_IDS,
    MPL_TOKENIZER_COUNT
} mpl_tokenizer;

#define MPL_DNA_VOCAB 5

/* Local. "bytes", "dna", "ids". */
const char *mpl_tokenizer_name(mpl_tokenizer t);
/* Local. Parse a name; MPL_ERR_ARG naming it when unknown. */
mpl_status mpl_tokenizer_parse(const char *name, mpl_tokenizer *out);

/* Streaming FASTA -> DNA ids, fed block by block so a genome is never held
 * in memory. The state carries whether a header line is open and where we
 * are (for error messages). */
typedef struct mpl_dna_state {
    int in_header;         /* inside a '>' or ';' line */
    int line_start;        /* the next byte starts a line */
    int64_t line;          /* 1-based line of the next byte */
    int64_t offset;        /* byte offset of the next byte in the file */
    int64_t n_bases;       /* ids produced so far */
    int64_t n_ambiguous;   /* IUPAC codes other than ACGTN mapped to N */
} mpl_dna_state;

/* Local. A fresh state (before the first byte of a file). */
void mpl_dna_state_init(mpl_dna_state *s);
/* Local. Encode in[0..n) into out (room for n ids); *n_out ids written.
 * MPL_ERR_FORMAT "<path>:<line>: byte <offset>: '<c>' is not a FASTA
 * base..." on a character that is neither a base code nor whitespace
 * outside a header. out may be NULL (count only). */
mpl_status mpl_dna_feed(mpl_dna_state *s, const char *path, const unsigned char *in, int64_t n,
                        uint8_t *out, int64_t *n_out);

/* Local. Turn text (a prompt) into ids of tokenizer t with vocabulary V:
 * bytes: one id per byte; dna: as a FASTA body (no headers); ids: decimal
 * numbers separated by spaces, commas or newlines, each in [0, V).
 * *ids is malloc'd (caller frees; at least one element allocated).
 * MPL_ERR_ARG naming the offending character or number. */
mpl_status mpl_tokenizer_encode(mpl_tokenizer t, int64_t V, const char *text, size_t n_bytes,
                                int32_t **ids, int64_t *n_ids);

/* Local. The text of one id into buf (n >= 16), NUL-terminated; returns
 * the number of bytes (bytes: 1, the raw byte, which may be 0). */
size_t mpl_tokenizer_decode(mpl_tokenizer t, int32_t id, char *buf, size_t n);

#endif
