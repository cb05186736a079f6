/* The config table: defaults, parsing, ranges, errors naming the key, and
 * the text round trip used by checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "testutil.h"

static void expect_err(mpl_status st, const char *fragment)
{
    assert_int_equal(st, MPL_ERR_CONFIG);
    if (!strstr(mpl_err_cause(), fragment)) {
        printf("message '%s' lacks '%s'\n", mpl_err_cause(), fragment);
        fail();
    }
    mpl_err_clear();
}

static void test_launch_config_set(void **s)
{
    (void)s;
    mpl_config c;
    mpl_config_defaults(&c);
    assert_int_equal(c.d_model, 128);
    assert_int_equal(mpl_config_set_arg(&c, "d_model=64"), MPL_OK);
    assert_int_equal(c.d_model, 64);
    assert_int_equal(mpl_config_set_arg(&c, "steps=1e3"), MPL_OK);
    assert_int_equal(c.steps, 1000);
    assert_int_equal(mpl_config_set_arg(&c, "lr=2.5e-4"), MPL_OK);
    assert_true(c.lr == 2.5e-4);
    assert_int_equal(mpl_config_set_arg(&c, "attn=fmm"), MPL_OK);
    expect_err(mpl_config_set_arg(&c, "d_modle=64"), "unknown config key 'd_modle'");
    expect_err(mpl_config_set_arg(&c, "d_model=abc"), "'d_model': 'abc' is not an integer");
    expect_err(mpl_config_set_arg(&c, "d_model=1.5"), "not an integer");
    expect_err(mpl_config_set_arg(&c, "n_layer=0"), "outside");
    expect_err(mpl_config_set_arg(&c, "lr=nan"), "'lr'");
    expect_err(mpl_config_set_arg(&c, "attn=flash"), "not one of dense|fmm");
    expect_err(mpl_config_set_arg(&c, "novalue"), "expected key=value");
}

static void test_launch_config_validate(void **s)
{
    (void)s;
    mpl_config c;
    mpl_config_defaults(&c);
    assert_int_equal(mpl_config_validate(&c), MPL_OK);
    c.n_head = 3;
    expect_err(mpl_config_validate(&c), "n_head=3 must divide d_model=128");
    mpl_config_defaults(&c);
    c.min_lr = 1;
    expect_err(mpl_config_validate(&c), "min_lr");
    mpl_config_defaults(&c);
    c.warmup = c.steps;
    expect_err(mpl_config_validate(&c), "warmup");
}

/* comm: nccl is refused with a sentence naming the reason, whichever
 * applies first: a CPU device, a build without NCCL, the missing backend. */
static void test_launch_config_comm(void **s)
{
    (void)s;
    mpl_config c;
    mpl_config_defaults(&c);
    assert_string_equal(c.comm, "auto");
    assert_int_equal(mpl_config_set_arg(&c, "comm=mpi"), MPL_OK);
    assert_int_equal(mpl_config_validate(&c), MPL_OK);
    expect_err(mpl_config_set_arg(&c, "comm=gloo"), "'comm': 'gloo' is not one of auto|mpi|nccl");
    assert_int_equal(mpl_config_set_arg(&c, "comm=nccl"), MPL_OK);
    expect_err(mpl_config_validate(&c), "comm=nccl moves GPU buffers and needs device=cuda "
               "(device=cpu: use comm=mpi or comm=auto)");
    if (!mpl_cuda_built()) return; /* device=cuda is refused before comm is looked at */
    assert_int_equal(mpl_config_set_arg(&c, "device=cuda"), MPL_OK);
    assert_int_equal(mpl_config_validate(&c), MPL_ERR_UNSUPPORTED);
    const char *want = strstr(mpl_build_info(), "nccl=yes")
                           ? "comm=nccl: the NCCL communicator is not implemented"
                           : "comm=nccl: this build has no NCCL (nccl=no in multipole --version)";
    if (!strstr(mpl_err_cause(), want)) {
        printf("message '%s' lacks '%s'\n", mpl_err_cause(), want);
        fail();
    }
    mpl_err_clear();
    assert_int_equal(mpl_config_set_arg(&c, "comm=auto"), MPL_OK);
    assert_int_equal(mpl_config_validate(&c), MPL_OK);
}

static void test_launch_config_files(void **s)
{
    (void)s;
    char *dir = mpl_test_tmpdir("cfg");
    char path[4200];
    snprintf(path, sizeof path, "%s/a.ini", dir);
    FILE *f = fopen(path, "w");
    fputs("[model]\nd_model = 96\nn_head = 3\n[train]\nrun_dir = somewhere/else\n", f);
    fclose(f);
    mpl_config c, d;
    mpl_config_defaults(&c);
    assert_int_equal(mpl_config_load_file(&c, path), MPL_OK);
    assert_int_equal(c.d_model, 96);
    assert_string_equal(c.run_dir, "somewhere/else");
    /* text round trip: every key survives */
    char *text = mpl_config_to_text(&c);
    mpl_config_defaults(&d);
    assert_int_equal(mpl_config_load_text(&d, text, "saved"), MPL_OK);
    char *text2 = mpl_config_to_text(&d);
    assert_string_equal(text, text2);
    free(text), free(text2);
    /* errors name the file and the key */
    f = fopen(path, "w");
    fputs("[model]\nd_model = 96\nbogus = 1\n", f);
    fclose(f);
    expect_err(mpl_config_load_file(&c, path), "a.ini: unknown config key 'bogus'");
    f = fopen(path, "w");
    fputs("[model\nd_model = 96\n", f);
    fclose(f);
    expect_err(mpl_config_load_file(&c, path), "not a valid INI line");
    snprintf(path, sizeof path, "%s/missing.ini", dir);
    expect_err(mpl_config_load_file(&c, path), "cannot open config file");
    free(dir);
}

static void test_launch_config_reference(void **s)
{
    (void)s;
    int n;
    const mpl_cfg_key *k = mpl_config_keys(&n);
    assert_true(n > 20);
    for (int i = 0; i < n; i++) {
        assert_non_null(k[i].help);
        for (int j = i + 1; j < n; j++) assert_string_not_equal(k[i].name, k[j].name);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_config_set),
        cmocka_unit_test(test_launch_config_validate),
        cmocka_unit_test(test_launch_config_comm),
        cmocka_unit_test(test_launch_config_files),
        cmocka_unit_test(test_launch_config_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
