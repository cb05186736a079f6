/* The training loop (see train_loop.h). */
#include "train_loop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/trace.h"
#include "eval.h"
#include "flops.h"
#include "io/ckpt.h"
#include "io/rundir.h"
#include "progress.h"

typedef struct loop {
    const mpl_cli *cli;
    mpl_comm *world;
    mpl_trainer *t;
    const mpl_train_opts *o;
    mpl_progress prog;           /* rank 0's stdout */
    FILE *csv;                   /* rank 0 */
    double flops_per_token, peak;  /* model FLOPs per token; FLOP/s of the whole world */
    int64_t last_saved;          /* step of the newest checkpoint on disk, -1: none */
} loop;

/* Collective on world: checkpoint t at its current step with `cursor`. */
static mpl_status save_ckpt(loop *lp, int64_t cursor)
{
    mpl_trainer *t = lp->t;
    char path[4096];
    mpl_rundir_ckpt_path(t->cfg.run_dir, t->step, path, sizeof path);
    char *text = mpl_config_to_text(&t->cfg);
    if (!text) return mpl_err(MPL_ERR_NOMEM, "out of memory writing the config text");
    mpl_ckpt_state s = {t->step, cursor, t->cfg.seed, 0};
    mpl_ckpt_meta meta = {text, mpl_comm_size(lp->world), t->sp, t->dp, mpl_build_info()};
    mpl_model *m = t->model;
    float *om = NULL, *ov = NULL;
    /* a device model's parameters and moments are staged through host
     * memory: the file holds fp32 global tensors whatever the device */
    const double t0 = mpl_trace_now();
    mpl_status st = mpl_model_params_pull(m);
    if (st == MPL_OK) st = mpl_trainer_optim_gather(t, &om, &ov);
    if (st == MPL_OK)
        st = mpl_ckpt_save(lp->world, path, mpl_model_layout(m), mpl_model_params(m), om, ov, &s,
                           &meta);
    mpl_trace_span(t0, "checkpoint", (int)t->step, "io", MPL_TRACE_MAIN);
    mpl_trainer_optim_release(t, &om, &ov);
    free(text);
    MPL_CHECK(st);
    if (lp->cli->rank == 0) st = mpl_ckpt_fault_point("before_pointer", t->step, path);
    if (lp->cli->rank == 0 && st == MPL_OK)
        st = mpl_rundir_commit(t->cfg.run_dir, t->step, t->cfg.keep_ckpts);
    MPL_CHECK(mpl_comm_agree(lp->world, &st));
    lp->last_saved = t->step;
    if (lp->cli->rank == 0 && !lp->o->quiet) mpl_progress_print(&lp->prog, "checkpoint %s", path);
    return MPL_OK;
}

/* Collective on world: the peak FLOP/s of all ranks together, either
 * peak_flops per rank or every rank's sgemm measured at the same time (so
 * ranks sharing cores share the measured peak too). */
static mpl_status world_peak(loop *lp, int *measured)
{
    const mpl_config *c = &lp->t->cfg;
    *measured = c->peak_flops <= 0;
    if (!*measured) {
        lp->peak = c->peak_flops * mpl_comm_size(lp->world);
        return MPL_OK;
    }
    MPL_CHECK(mpl_comm_barrier(lp->world));
    double p = mpl_flops_sgemm(512);
    MPL_CHECK(mpl_comm_allreduce_sum_f64(lp->world, &p, 1));
    lp->peak = p;
    return MPL_OK;
}

static mpl_status open_csv(loop *lp)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/metrics.csv", lp->t->cfg.run_dir);
    FILE *probe = fopen(p, "r");
    int fresh = probe == NULL;
    if (probe) fclose(probe);
    lp->csv = fopen(p, "a");
    if (!lp->csv) return mpl_err(MPL_ERR_IO, "cannot append to %s", p);
    if (fresh)
        fprintf(lp->csv,
                "step,tokens,loss,lr,grad_norm,tok_per_s,elapsed_s,mfu,val_loss,bad,val_acc\n");
    return MPL_OK;
}

/* Collective on world: validation loss into *val_loss (a classifier's
 * accuracy into *val_acc), one line on rank 0. */
static mpl_status evaluate_split(loop *lp, double *val_loss, double *val_acc)
{
    mpl_trainer *t = lp->t;
    if (lp->o->cls_val) {
        mpl_eval_cls_result r;
        MPL_CHECK(mpl_eval_cls(t, lp->o->cls_val, t->cfg.eval_windows, &r, NULL, NULL));
        *val_loss = r.loss, *val_acc = r.accuracy;
        if (lp->cli->rank == 0)
            mpl_progress_print(&lp->prog, "eval step %lld: val loss %.4f | accuracy %.2f%% | %lld "
                               "examples in %.1f s", (long long)t->step, r.loss,
                               100 * r.accuracy, (long long)r.n_examples, r.seconds);
        return MPL_OK;
    }
    mpl_eval_result r;
    MPL_CHECK(mpl_eval_split(t, lp->o->val, t->cfg.eval_windows, lp->o->bytes_per_token, &r,
                             NULL, NULL));
    *val_loss = r.loss;
    if (lp->cli->rank == 0) {
        char bpb[32] = "n/a";
        if (isfinite(r.bits_per_byte)) snprintf(bpb, sizeof bpb, "%.4f", r.bits_per_byte);
        mpl_progress_print(&lp->prog, "eval step %lld: val loss %.4f | %.4f bits/token | %s "
                           "bits/byte | ppl %.3f | %lld tokens in %.1f s", (long long)t->step,
                           r.loss, r.bits_per_token, bpb, r.perplexity, (long long)r.n_tokens,
                           r.seconds);
    }
    return MPL_OK;
}

/* Collective on world: evaluate_split, a span of the trace. */
static mpl_status evaluate(loop *lp, double *val_loss, double *val_acc)
{
    mpl_trainer *t = lp->t;
    const double t0 = mpl_trace_now();
    mpl_status st = evaluate_split(lp, val_loss, val_acc);
    mpl_trace_span(t0, "eval", (int)t->step, "compute", MPL_TRACE_MAIN);
    return st;
}

/* Collective on world: end the run after a bad step the policy does not
 * allow. The parameters and moments in memory are those after the last
 * good update (bad steps change nothing), so they are saved as that step
 * unless its checkpoint exists; an older checkpoint is never replaced. */
static mpl_status give_up(loop *lp, const mpl_step_stats *s, const char *where,
                          int64_t n_row, int64_t good_step, int64_t good_cursor)
{
    mpl_trainer *t = lp->t;
    const mpl_config *c = &t->cfg;
    const int64_t bad_step = t->step;
    char kept[4200] = "no checkpoint (no step of this run was good)";
    /* A save during the bad run (ckpt_every) holds the same parameters at
     * a later step; it stays the newest and nothing is saved over it. */
    int64_t keep = lp->last_saved >= good_step ? lp->last_saved : good_step;
    if (keep > 0) {
        if (keep != lp->last_saved) {
            t->step = good_step;
            mpl_status st = save_ckpt(lp, good_cursor);
            t->step = bad_step;
            MPL_CHECK(st);
        }
        char p[4096];
        mpl_rundir_ckpt_path(c->run_dir, keep, p, sizeof p);
        snprintf(kept, sizeof kept, "the last good state is %s (the parameters after step "
                 "%lld)", p, (long long)good_step);
    }
    mpl_status st = mpl_err(MPL_ERR_NUMERIC,
                   "step %lld: the %s is %g (loss %g, gradient norm %g); the first non-finite "
                   "value is in %s; stopped after %lld bad step(s) in a row (nan_policy=%s, "
                   "max_bad_steps=%lld); %s: resume from it with a lower lr or grad_clip, or "
                   "check the data", (long long)bad_step,
                   isfinite(s->loss) ? "gradient norm" : "loss",
                   isfinite(s->loss) ? s->grad_norm : s->loss, s->loss, s->grad_norm, where,
                   (long long)n_row, c->nan_policy, (long long)c->max_bad_steps, kept);
    /* Every rank has this message; rank 0 alone keeps it as the cause. */
    mpl_comm_agree(lp->world, &st);
    return st;
}

/* Rank 0: the progress line of step s. */
static void report(loop *lp, const mpl_step_stats *s, double tps, double elapsed, double eta,
                   int force)
{
    const mpl_config *c = &lp->t->cfg;
    const int64_t step = lp->t->step;
    char el[32], et[32], bar[48], rate[16];
    mpl_fmt_hms(elapsed, el, sizeof el);
    mpl_fmt_hms(eta, et, sizeof et);
    double mfu = lp->peak > 0 ? tps * lp->flops_per_token / lp->peak : 0;
    if (lp->prog.tty) {
        mpl_fmt_bar((double)step / (double)c->steps, 24, bar, sizeof bar);
        mpl_fmt_si(tps, rate, sizeof rate);
        mpl_progress_report(&lp->prog, force, "step %lld/%lld %s %3.0f%% | loss %.4f | %s tok/s "
                            "| MFU %.1f%% | eta %s", (long long)step, (long long)c->steps, bar,
                            100.0 * (double)step / (double)c->steps, s->loss, rate, 100 * mfu, et);
    } else {
        mpl_progress_report(&lp->prog, 1, "step %lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | "
                            "%.0f tok/s | MFU %.2f%% | elapsed %s | eta %s", (long long)step,
                            (long long)c->steps, s->loss, s->lr, s->grad_norm, tps, 100 * mfu,
                            el, et);
    }
}

mpl_status mpl_train_loop(const mpl_cli *cli, mpl_comm *world, mpl_trainer *t,
                          mpl_data_reader *rd, int64_t cursor, const mpl_train_opts *o)
{
    mpl_status st = MPL_OK;
    const mpl_config *c = &t->cfg;
    const int64_t L = c->seq_len, B = c->batch;
    /* This rank reads only its chunk [a, a+n) of each sequence, plus the
     * next token as the last target: n + 1 tokens per window. */
    const int64_t a = t->chunk_a, n = t->chunk_b - t->chunk_a;
    loop lp = {cli, world, t, o, {0}, NULL, mpl_flops_train_per_token(c), 0,
               o->resumed_step > 0 ? o->resumed_step : -1};
    mpl_progress_init(&lp.prog, stdout, o->quiet);
    int32_t *buf = malloc((size_t)(n + 1) * sizeof *buf);
    int32_t *tok = malloc((size_t)(B * n) * sizeof *tok);
    int32_t *tgt = malloc((size_t)(B * n) * sizeof *tgt);
    uint8_t *mask = malloc((size_t)(B * n));
    if (!buf || !tok || !tgt || !mask)
        MPL_FAIL_GOTO(done, MPL_ERR_NOMEM, "out of memory for a batch");
    int measured;
    MPL_CHECK_GOTO(world_peak(&lp, &measured), done);
    if (cli->rank == 0) {
        st = open_csv(&lp);
        if (!o->quiet) {
            printf("%s\ntraining %s: %lld parameters, %d rank(s) (sp=%d dp=%d), seq_len=%lld, "
                   "global batch=%lld, steps %lld..%lld\n", mpl_build_info(), c->data,
                   (long long)mpl_model_layout(t->model)->n_elems, mpl_comm_size(world), t->sp,
                   t->dp, (long long)L, (long long)(B * t->dp), (long long)t->step + 1,
                   (long long)c->steps);
            printf("MFU: %.4g model FLOPs per token (fwd+bwd, see --help) over a peak of %.4g "
                   "FLOP/s for %d rank(s) (%s)\n", lp.flops_per_token, lp.peak,
                   mpl_comm_size(world), measured ? "sgemm 512^3 measured now on every rank"
                                                  : "peak_flops per rank");
            mpl_plan_print(stdout, c, &t->plan);
            fflush(stdout);
        }
    }
    MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);

    const double t0 = mpl_now();
    double t_last = t0, t_ckpt = t0, paused = 0;
    int64_t tok_since = 0, start_step = t->step, good_step = t->step, good_cursor = cursor;
    int64_t n_row = 0, n_bad = 0;
    while (t->step < c->steps) {
        for (int64_t b = 0; b < B; b++) {
            int64_t g = cursor + (int64_t)t->dp_rank * B + b;
            if (o->cls) {
                /* this rank's slice of the example, its padding mask, its label */
                st = mpl_cls_reader_read(o->cls, mpl_cls_reader_example_of(o->cls, g), a, n,
                                         tok + b * n, mask + b * n, tgt + b);
                if (st != MPL_OK) break;
                continue;
            }
            st = mpl_data_reader_read(rd, g, a, n + 1, buf);
            if (st != MPL_OK) break;
            memcpy(tok + b * n, buf, (size_t)n * sizeof *buf);
            memcpy(tgt + b * n, buf + 1, (size_t)n * sizeof *buf);
        }
        MPL_CHECK_GOTO(mpl_comm_agree(world, &st), done);
        mpl_step_stats s;
        if (o->cls) MPL_CHECK_GOTO(mpl_trainer_step_cls(t, tok, mask, tgt, &s), done);
        else MPL_CHECK_GOTO(mpl_trainer_step(t, tok, tgt, &s), done);
        cursor += B * t->dp;
        tok_since += o->cls ? B * t->dp * L : s.n_tokens;
        int last = t->step == c->steps || t->step - start_step == o->stop_after;
        if (s.bad) {
            char where[512];
            n_row++, n_bad++;
            MPL_CHECK_GOTO(mpl_trainer_locate_nonfinite(t, tok, tgt, where, sizeof where), done);
            if (!strcmp(c->nan_policy, "abort") || n_row >= c->max_bad_steps) {
                st = give_up(&lp, &s, where, n_row, good_step, good_cursor);
                goto done;
            }
            if (cli->rank == 0)
                mpl_progress_print(&lp.prog, "warning: step %lld: loss %g, gradient norm %g: "
                                   "update skipped (%lld in a row, %lld in all; stops at %lld "
                                   "in a row); first non-finite value in %s",
                                   (long long)t->step, s.loss, s.grad_norm, (long long)n_row,
                                   (long long)n_bad, (long long)c->max_bad_steps, where);
        } else {
            n_row = 0;
            good_step = t->step;
            good_cursor = cursor;
        }
        double val_loss = NAN, val_acc = NAN;
        if (c->eval_every > 0 && (o->val || o->cls_val) && (t->step % c->eval_every == 0 || last)) {
            double e0 = mpl_now();
            MPL_CHECK_GOTO(evaluate(&lp, &val_loss, &val_acc), done);
            paused += mpl_now() - e0;
        }

        double now = mpl_now();
        if (cli->rank == 0) {
            double tps = (double)tok_since / fmax(now - t_last - paused, 1e-9);
            double mfu = lp.peak > 0 ? tps * lp.flops_per_token / lp.peak : 0;
            char vl[32] = "", va[32] = "";
            if (!isnan(val_loss)) snprintf(vl, sizeof vl, "%.6f", val_loss);
            if (!isnan(val_acc)) snprintf(va, sizeof va, "%.6f", val_acc);
            fprintf(lp.csv, "%lld,%lld,%.6f,%.6e,%.6f,%.1f,%.3f,%.6g,%s,%d,%s\n",
                    (long long)t->step, (long long)(cursor * L), s.loss, s.lr, s.grad_norm, tps,
                    now - t0, mfu, vl, s.bad, va);
            int64_t end = o->stop_after ? start_step + o->stop_after : c->steps;
            if (end > c->steps) end = c->steps;
            double per = (now - t0) / (double)(t->step - start_step);
            int boundary = t->step % c->log_every == 0 || last || t->step == start_step + 1;
            if (boundary || lp.prog.tty)
                report(&lp, &s, tps, now - t0, per * (double)(end - t->step), boundary);
            if (boundary) {
                fflush(lp.csv);
                t_last = now;
                tok_since = 0;
                paused = 0;
            }
        }
        /* Signals and the wall clock are agreed on (rank 0's clock decides),
         * so every rank stops or saves at the same step: one small
         * all-reduce per step. */
        int64_t flags[2] = {*o->stop, cli->rank == 0 && c->ckpt_every_minutes > 0 &&
                                          mpl_now() - t_ckpt >= 60.0 * c->ckpt_every_minutes};
        MPL_CHECK_GOTO(mpl_comm_allreduce_max_i64(world, flags, 2), done);
        const int64_t stop = flags[0], timed = flags[1];
        int ckpt_due = last || stop || timed || (c->ckpt_every > 0 && t->step % c->ckpt_every == 0);
        if (ckpt_due) {
            double c0 = mpl_now();
            MPL_CHECK_GOTO(save_ckpt(&lp, cursor), done);
            t_ckpt = mpl_now();
            paused += t_ckpt - c0;
        }
        if (last) {
            if (t->step < c->steps && cli->rank == 0)
                mpl_progress_print(&lp.prog, "stopped after %lld step(s) (--stop-after); "
                                   "continue with --resume auto", o->stop_after);
            break;
        }
        if (stop) {
            if (cli->rank == 0)
                mpl_progress_print(&lp.prog, "signal %d: stopped after step %lld with a "
                                   "checkpoint; resume with --resume auto", (int)stop,
                                   (long long)t->step);
            break;
        }
    }
    if (cli->rank == 0 && n_bad)
        mpl_progress_print(&lp.prog, "%lld step(s) of this run had a non-finite loss or "
                           "gradient and were skipped (column `bad` of metrics.csv)",
                           (long long)n_bad);
    if (cli->rank == 0 && !o->quiet) {
        /* what the plan promised against what the process used */
        const int64_t peak = mpl_plan_rss_peak();
        mpl_progress_print(&lp.prog, "memory: peak resident %.1f MiB = %.1f MiB at start + "
                           "%.1f MiB; plan %.1f MiB", (double)peak / (1 << 20),
                           (double)t->rss_start / (1 << 20),
                           (double)(peak - t->rss_start) / (1 << 20),
                           (double)t->plan.total / (1 << 20));
    }
done:
    if (cli->rank == 0) mpl_progress_end(&lp.prog);
    if (lp.csv) fclose(lp.csv);
    free(buf);
    free(tok);
    free(tgt);
    free(mask);
    return st;
}
