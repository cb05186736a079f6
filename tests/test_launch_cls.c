/* The classifier through the trainer, at mpiexec -n 1 and 3: for every
 * mechanism (bidirectional), a sequence padded at the end gives the same
 * logits as the same sequence unpadded, with the padded sequence split
 * over the SP group (the padding falls on the last ranks) and the
 * unpadded one on one rank; and one training step of the split run equals
 * the single-rank one (loss and gradients). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/trainer.h"
#include "testutil.h"

enum { REAL = 23, PADDED = 37, BATCH = 2 };

static mpl_comm *world, *self;

static void make_cfg(mpl_config *c, const char *attn, int64_t L, int sp)
{
    mpl_config_defaults(c);
    snprintf(c->attn, sizeof c->attn, "%s", attn);
    snprintf(c->task, sizeof c->task, "classify");
    c->causal = 0;
    c->n_classes = 5;
    c->vocab_size = 16;
    c->d_model = 16;
    c->n_layer = 2;
    c->n_head = 2;
    c->mlp_mult = 2;
    c->seq_len = L;
    c->n_pos = L;   /* learned positions: a padded sequence's real tokens keep theirs */
    c->band = 6;
    c->segment = 4; /* fixed: the default follows L */
    c->batch = BATCH;
    c->steps = 10;
    c->warmup = 1;
    c->grad_clip = 0;
    c->seed = 9;
    c->sp = sp;
    assert_int_equal(mpl_config_validate(c), MPL_OK);
}

static int32_t tok_at(int64_t s, int64_t t) { return (int32_t)(1 + (s * 5 + t * t + 3 * t) % 15); }

/* Class logits (BATCH, 5) of sequences of `real` tokens padded to L, on
 * trainer tr's chunk. */
static void logits_of(mpl_trainer *tr, int64_t real, float *out)
{
    const int64_t a = tr->chunk_a, n = tr->chunk_b - tr->chunk_a;
    int32_t tok[BATCH * PADDED], lab[BATCH] = {3, 1};
    uint8_t mask[BATCH * PADDED];
    for (int64_t s = 0; s < BATCH; s++)
        for (int64_t i = 0; i < n; i++) {
            tok[s * n + i] = a + i < real ? tok_at(s, a + i) : 0;
            mask[s * n + i] = a + i < real;
        }
    mpl_attn_geom g = {BATCH, n, a, mask};
    double sum;
    int64_t cnt;
    assert_int_equal(mpl_model_forward(tr->model, &g, tok, lab, &sum, &cnt), MPL_OK);
    memcpy(out, mpl_model_class_logits(tr->model), BATCH * 5 * sizeof *out);
}

static void check_kind(const char *attn)
{
    const int P = mpl_comm_size(world);
    mpl_config c1, cp;
    make_cfg(&c1, attn, REAL, 1);
    make_cfg(&cp, attn, PADDED, P);
    mpl_trainer *one = NULL, *split = NULL;
    assert_int_equal(mpl_trainer_create(&c1, self, &one), MPL_OK);
    mpl_status st = mpl_trainer_create(&cp, world, &split);
    if (st != MPL_OK) printf("create %s: %s\n", attn, mpl_err_cause());
    assert_int_equal(st, MPL_OK);
    float a[BATCH * 5], b[BATCH * 5];
    logits_of(one, REAL, a);
    logits_of(split, REAL, b);
    char what[96];
    snprintf(what, sizeof what, "cls padded %d->%d %s sp=%d rank=%d", REAL, PADDED, attn, P,
             mpl_comm_rank(world));
    assert_true(mpl_test_close_f32(what, b, a, BATCH * 5, 1e-5, 1e-4));
    mpl_trainer_destroy(&split);
    mpl_trainer_destroy(&one);
}

static void test_launch_cls_padding(void **s)
{
    (void)s;
    const char *kinds[] = {"dense", "fmm", "combiner_fixed", "combiner_logsparse"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (mpl_comm_size(world) > 1 && !strcmp(kinds[k], "dense")) continue; /* single-rank oracle */
        check_kind(kinds[k]);
    }
}

/* One step split over the world equals the single-rank step. */
static void test_launch_cls_step(void **s)
{
    (void)s;
    const int P = mpl_comm_size(world);
    mpl_config c1, cp;
    make_cfg(&c1, "fmm", PADDED, 1);
    make_cfg(&cp, "fmm", PADDED, P);
    mpl_trainer *one = NULL, *split = NULL;
    assert_int_equal(mpl_trainer_create(&c1, self, &one), MPL_OK);
    assert_int_equal(mpl_trainer_create(&cp, world, &split), MPL_OK);
    mpl_step_stats sa, sb;
    mpl_trainer *trs[2] = {one, split};
    mpl_step_stats *ss[2] = {&sa, &sb};
    for (int k = 0; k < 2; k++) {
        mpl_trainer *tr = trs[k];
        const int64_t a = tr->chunk_a, n = tr->chunk_b - tr->chunk_a;
        int32_t tok[BATCH * PADDED], lab[BATCH] = {4, 0};
        uint8_t mask[BATCH * PADDED];
        for (int64_t q = 0; q < BATCH; q++)
            for (int64_t i = 0; i < n; i++) {
                const int64_t len = q ? REAL : PADDED - 3;
                tok[q * n + i] = a + i < len ? tok_at(q, a + i) : 0;
                mask[q * n + i] = a + i < len;
            }
        assert_int_equal(mpl_trainer_step_cls(tr, tok, mask, lab, ss[k]), MPL_OK);
    }
    assert_true(fabs(sa.loss - sb.loss) <= 1e-5 * fabs(sa.loss));
    assert_int_equal(sa.n_tokens, BATCH);
    assert_int_equal(sb.n_tokens, BATCH);
    const int64_t n = mpl_model_layout(one->model)->n_elems;
    const float *ga = mpl_model_grads(one->model), *gb = mpl_model_grads(split->model);
    double gmax = 0;
    for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(ga[i]));
    char what[64];
    snprintf(what, sizeof what, "cls step grads sp=%d rank=%d", P, mpl_comm_rank(world));
    assert_true(mpl_test_close_f32(what, gb, ga, n, 1e-5 * gmax, 1e-5));
    mpl_trainer_destroy(&split);
    mpl_trainer_destroy(&one);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (mpl_comm_create_world(&world) != MPL_OK) return 1;
    if (mpl_comm_split(world, mpl_comm_rank(world), 0, &self) != MPL_OK) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_cls_padding),
        cmocka_unit_test(test_launch_cls_step),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mpl_comm_destroy(&self);
    mpl_comm_destroy(&world);
    MPI_Finalize();
    return rc;
}
