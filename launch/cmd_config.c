/* `multipole config`: the key reference (from the one table in config.c)
 * and the fully resolved config of a file plus overrides. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "config.h"

static const char *const config_help =
    "usage: multipole config --keys | --markdown | [-c FILE.ini] [--set key=value]...\n"
    "\n"
    "  --keys        list every config key with its default and meaning\n"
    "  --markdown    the same as a Markdown table (the README's reference)\n"
    "  -c FILE.ini   print the resolved config (defaults, file, then --set)\n";

int mpl_cmd_config(int argc, char **argv)
{
    mpl_cli cli;
    mpl_cli_init(&cli, "config");
    mpl_config cfg;
    mpl_config_defaults(&cfg);
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            if (cli.rank == 0) fputs(config_help, stdout);
            return MPL_EXIT_OK;
        } else if (!strcmp(argv[i], "--markdown")) {
            if (cli.rank == 0) mpl_config_print_reference(stdout);
            return MPL_EXIT_OK;
        } else if (!strcmp(argv[i], "--keys")) {
            int n;
            const mpl_cfg_key *k = mpl_config_keys(&n);
            for (int j = 0; cli.rank == 0 && j < n; j++)
                printf("%-14s %-9s default %-10s %s\n", k[j].name, k[j].group,
                       k[j].def[0] ? k[j].def : "\"\"", k[j].help);
            return MPL_EXIT_OK;
        } else if ((r = mpl_cli_opt(argc, argv, &i, "-c", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "-c needs a file");
            if (mpl_config_load_file(&cfg, v) != MPL_OK) return mpl_cli_arg_error(&cli);
        } else if ((r = mpl_cli_opt(argc, argv, &i, "--set", &v))) {
            if (r < 0) return mpl_cli_usage(&cli, "--set needs key=value");
            if (mpl_config_set_arg(&cfg, v) != MPL_OK) return mpl_cli_arg_error(&cli);
        } else {
            return mpl_cli_usage(&cli, "unknown argument '%s'", argv[i]);
        }
    }
    if (mpl_config_validate(&cfg) != MPL_OK) return mpl_cli_arg_error(&cli);
    char *text = mpl_config_to_text(&cfg);
    if (cli.rank == 0 && text) fputs(text, stdout);
    free(text);
    return MPL_EXIT_OK;
}
