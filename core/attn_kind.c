/* Names of the attention kinds, shared by the config and the op command. */
#include "attn.h"

#include <string.h>

static const char *const kind_names[MPL_ATTN_KIND_COUNT] = {
    "dense", "fmm", "combiner_fixed", "combiner_logsparse"};

const char *mpl_attn_kind_name(mpl_attn_kind k)
{
    return ((int)k >= 0 && k < MPL_ATTN_KIND_COUNT) ? kind_names[k] : "unknown";
}

mpl_status mpl_attn_kind_parse(const char *s, mpl_attn_kind *out)
{
    for (int k = 0; k < MPL_ATTN_KIND_COUNT; k++)
        if (strcmp(s, kind_names[k]) == 0) {
            *out = (mpl_attn_kind)k;
            return MPL_OK;
        }
    return mpl_err(MPL_ERR_ARG,
                   "unknown attention kind '%s' (expected dense, fmm, combiner_fixed or "
                   "combiner_logsparse)", s);
}
