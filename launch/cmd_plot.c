/* placeholder replaced below */
#include "commands.h"
int mpl_cmd_plot(int argc, char **argv) { (void)argc; (void)argv; return 1; }
