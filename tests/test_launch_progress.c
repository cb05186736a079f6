/* Progress output: the formatting helpers, a terminal's bar rewritten in
 * place (\r ... erase to end of line) and ended before an ordinary line,
 * plain lines elsewhere, and the quiet and rate-limited cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/progress.h"
#include "tests/testutil.h"

static char *slurp(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static void test_launch_progress_format(void **st)
{
    (void)st;
    char b[64];
    mpl_fmt_hms(59.4, b, sizeof b);
    assert_string_equal(b, "0:59");
    mpl_fmt_hms(3725, b, sizeof b);
    assert_string_equal(b, "1:02:05");
    mpl_fmt_hms(1.0 / 0.0, b, sizeof b);
    assert_string_equal(b, "-");
    mpl_fmt_bar(0.5, 10, b, sizeof b);
    assert_string_equal(b, "[#####.....]");
    mpl_fmt_bar(2, 4, b, sizeof b);
    assert_string_equal(b, "[####]");
    mpl_fmt_si(950, b, sizeof b);
    assert_string_equal(b, "950");
    mpl_fmt_si(12345, b, sizeof b);
    assert_string_equal(b, "12.3k");
    mpl_fmt_si(2.5e9, b, sizeof b);
    assert_string_equal(b, "2.50G");
}

static void test_launch_progress_tty(void **st)
{
    (void)st;
    setenv("MPL_PROGRESS", "tty", 1);
    FILE *f = tmpfile();
    mpl_progress p;
    mpl_progress_init(&p, f, 0);
    mpl_progress_report(&p, 1, "step %d", 1);
    mpl_progress_report(&p, 0, "step %d", 2); /* within 0.1 s: not drawn */
    mpl_progress_report(&p, 1, "step %d", 3);
    mpl_progress_print(&p, "checkpoint x");
    mpl_progress_report(&p, 1, "step %d", 4);
    mpl_progress_end(&p);
    char *s = slurp(f);
    assert_string_equal(s, "\rstep 1\033[K\rstep 3\033[K\ncheckpoint x\n\rstep 4\033[K\n");
    free(s);
    fclose(f);
}

static void test_launch_progress_plain(void **st)
{
    (void)st;
    setenv("MPL_PROGRESS", "plain", 1);
    FILE *f = tmpfile();
    mpl_progress p;
    mpl_progress_init(&p, f, 0);
    mpl_progress_report(&p, 1, "step %d", 1);
    mpl_progress_print(&p, "eval");
    mpl_progress_report(&p, 0, "step %d", 2);
    mpl_progress_end(&p);
    char *s = slurp(f);
    assert_string_equal(s, "step 1\neval\nstep 2\n");
    free(s);
    fclose(f);
    /* a plain interval: nothing before it passed, not even the forced end */
    f = tmpfile();
    mpl_progress_init(&p, f, 0);
    p.plain_interval = 100;
    mpl_progress_report(&p, 0, "x");
    mpl_progress_report(&p, 1, "done");
    s = slurp(f);
    assert_string_equal(s, "");
    free(s);
    fclose(f);
    /* quiet: reports vanish, prints stay */
    f = tmpfile();
    mpl_progress_init(&p, f, 1);
    mpl_progress_report(&p, 1, "step 1");
    mpl_progress_print(&p, "warning");
    s = slurp(f);
    assert_string_equal(s, "warning\n");
    free(s);
    fclose(f);
    unsetenv("MPL_PROGRESS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_progress_format),
        cmocka_unit_test(test_launch_progress_tty),
        cmocka_unit_test(test_launch_progress_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
