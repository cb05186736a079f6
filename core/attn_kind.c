/* Names of the attention kinds and FMM feature maps, shared by the config
 * and the op command. */
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

static const char *const map_names[MPL_FMM_MAP_COUNT] = {"elu", "elu_flip", "tanh"};

const char *mpl_attn_fmm_map_name(mpl_fmm_map m)
{
    return ((int)m >= 0 && m < MPL_FMM_MAP_COUNT) ? map_names[m] : "unknown";
}

mpl_status mpl_attn_fmm_maps_parse(const char *s, mpl_attn_cfg *cfg)
{
    int n = 0;
    const char *p = s;
    while (1) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int m = 0; m < MPL_FMM_MAP_COUNT; m++)
            if (strlen(map_names[m]) == len && strncmp(p, map_names[m], len) == 0) found = m;
        if (found < 0)
            return mpl_err(MPL_ERR_ARG, "fmm_maps '%s': '%.*s' is not a feature map (elu, elu_flip, tanh)",
                           s, (int)len, p);
        if (n == MPL_FMM_MAX_MAPS)
            return mpl_err(MPL_ERR_ARG, "fmm_maps '%s': more than %d maps", s, MPL_FMM_MAX_MAPS);
        cfg->fmm_maps[n++] = (mpl_fmm_map)found;
        if (p[len] == '\0') break;
        p += len + 1;
    }
    cfg->fmm_n_maps = n;
    return MPL_OK;
}
