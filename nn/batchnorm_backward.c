/*
** batchnorm_backward.c -- the autograd node of ln_bn_forward: BatchNorm's
** NativeBatchNormBackward0, and the same node for ghost BN (per block),
** BatchRenorm (BatchRenormBackward0) and FusedBatchNorm2d
** (FusedBatchNormBackward0, with the addend's gradient).
**
** The node saves the input the kernels read (an alias), the weight and
** bias (for their shape and dtype), the fused ReLU's bit mask, and in
** `extra` (ln_bn_saved) the per-block, per-channel statistics used --
** nothing of the input's size but the mask's one bit per element. On a
** device, the statistics saved there feed the device's backward
** (batchnorm_device.h), which also writes the parameters' gradients.
*/
#include <stdlib.h>

#include "../core/autograd.h"
#include "batchnorm_functional.h"
#include "scratch.h"

static ln_tensor *zeros_like(ln_tensor *p) {
  return ln_zeros(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                  ln_tensor_device(p));
}

/* A new tensor holding v, shaped and typed like the parameter p. */
static ln_tensor *param_grad(ln_tensor *p, const double *v) {
  ln_tensor *g = ln_empty(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                          ln_tensor_device(p));
  if (g) ln_bn_vec_store(g, v);
  return g;
}

/* What the backward computes and returns. */
typedef struct bn_grads {
  ln_tensor *x, *dy, *mask;          /* borrowed (dy: laid out like x, owned) */
  ln_tensor *dx, *dz;                /* the input's and the addend's gradients, or NULL */
  bool sums;                         /* the per-channel sums are needed */
  double *wr, *sdy, *sdyx, *gw, *gb; /* C each */
} bn_grads;

/* Block g: the kernels' backward with w*r for w, then the block's share of
** the parameters' gradients:
**   dweight += sum(dz * (x - mean)) * invstd * r + d * sum(dz),
**   dbias += sum(dz)
** (r = 1, d = 0 but for BatchRenorm in training; the first block assigns,
** so that one block gives BatchNorm's values to the bit). */
static ln_status backward_block(const ln_bn_saved *s, bn_grads *t, const double *w,
                                int64_t g) {
  const ln_bn_blocks *bl = &s->blocks;
  int64_t C = s->C;
  bool renorm = s->r && s->training;
  const double *mean = s->mean + g * C, *invstd = s->invstd + g * C;
  const double *r = renorm ? s->r + g * C : NULL, *d = renorm ? s->d + g * C : NULL;
  ln_bn_view xv, gv, dxv, dzv;
  ln_bn_mask mv;
  if (!ln_bn_block_view(bl, t->x, g, &xv) || !ln_bn_block_view(bl, t->dy, g, &gv) ||
      (t->dx && !ln_bn_block_view(bl, t->dx, g, &dxv)) ||
      (t->dz && !ln_bn_block_view(bl, t->dz, g, &dzv)))
    return ln_error(LN_ERUNTIME, "batch_norm backward: no kernel layout for a block");
  if (t->mask) {
    mv = s->masks[g];
    mv.bits = ln_tensor_data(t->mask);
  }
  for (int64_t c = 0; c < C; c++) t->wr[c] = r ? w[c] * r[c] : w[c];
  ln_status st = ln_bn_cpu_backward(ln_tensor_dtype(t->x), &bl->plan.g, &xv, &gv,
                                    t->mask ? &mv : NULL, t->dx ? &dxv : NULL,
                                    t->dz ? &dzv : NULL, mean, invstd, t->wr, s->training,
                                    t->sums ? t->sdy : NULL, t->sdyx);
  if (st != LN_OK || !t->sums) return st;
  for (int64_t c = 0; c < C; c++) {
    double gw = t->sdyx[c] * invstd[c];
    if (r) gw = gw * r[c] + d[c] * t->sdy[c];
    t->gw[c] = g ? t->gw[c] + gw : gw;
    t->gb[c] = g ? t->gb[c] + t->sdy[c] : t->sdy[c];
  }
  return LN_OK;
}

/* The blocks on the CPU, then the parameters' gradients into grad_in[1]
** and grad_in[2] (when wanted). wv: C doubles. */
static ln_status cpu_backward(const ln_bn_saved *s, bn_grads *t, ln_tensor *w, ln_tensor *b,
                              bool need_w, bool need_b, double *wv, ln_tensor **grad_in) {
  ln_status st = LN_OK;
  ln_bn_vec_load(w, s->C, 1.0, wv);
  for (int64_t blk = 0; blk < s->blocks.G && st == LN_OK; blk++)
    st = backward_block(s, t, wv, blk);
  if (st != LN_OK) return st;
  if ((need_w && !(grad_in[1] = param_grad(w, t->gw))) ||
      (need_b && !(grad_in[2] = param_grad(b, t->gb))))
    return ln_last_status();
  return LN_OK;
}

static ln_tensor *empty_like(ln_tensor *p) {
  return ln_empty(ln_tensor_sizes(p), ln_tensor_dim(p), ln_tensor_dtype(p),
                  ln_tensor_device(p));
}

/* The blocks on x's device, by the implementation that takes the call,
** the parameters' gradients included (grad_in[1], grad_in[2]). */
static ln_status device_backward(const ln_bn_saved *s, bn_grads *t, ln_tensor *w, ln_tensor *b,
                                 bool need_w, bool need_b, ln_tensor **grad_in) {
  const ln_bn_blocks *bl = &s->blocks;
  ln_device dev = ln_tensor_device(t->x);
  ln_bn_dev_bwd d = { .device = dev.index, .dt = ln_tensor_dtype(t->x), .g = bl->plan.g,
                      .G = bl->G, .training = s->training, .renorm = s->renorm,
                      .eps = s->eps, .stats = ln_tensor_data(s->dev_stats) };
  ln_tensor *held[3] = { NULL, NULL, NULL };
  if (!ln_bn_dview_for(bl, t->x, &d.x) || !ln_bn_dview_for(bl, t->dy, &d.dy) ||
      (t->dx && !ln_bn_dview_for(bl, t->dx, &d.dx)) ||
      (t->dz && !ln_bn_dview_for(bl, t->dz, &d.dz)))
    return ln_error(LN_ERUNTIME, "batch_norm backward: no kernel layout for a block");
  if (t->mask) {
    d.mask.m = s->masks[0];
    d.mask.m.bits = ln_tensor_data(t->mask);
    d.mask.s_block = s->mask_step;
  }
  if ((need_w && !(grad_in[1] = empty_like(w))) || (need_b && !(grad_in[2] = empty_like(b))))
    return ln_last_status();
  ln_status st = ln_bn_dvec_for(w, &d.weight, &held[0]);
  if (st == LN_OK) st = ln_bn_dvec_for(need_w ? grad_in[1] : NULL, &d.grad_weight, &held[1]);
  if (st == LN_OK) st = ln_bn_dvec_for(need_b ? grad_in[2] : NULL, &d.grad_bias, &held[2]);
  const ln_bn_device_impl *impl = st == LN_OK ? ln_bn_device_for_backward(dev.type, &d) : NULL;
  if (st == LN_OK) st = impl ? impl->backward(&d) : ln_last_status();
  for (int i = 0; i < 3; i++) ln_tensor_release(held[i]);
  return st;
}

/* Inputs: input, weight, bias (and the addend for the fused form). With
** M values per channel in a block, w = weight * invstd (* r), mdy = mean
** of dz and mdyx = mean of dz * (x - mean), dz being the incoming gradient
** (masked by the ReLU in the fused form):
**   training: dx = w * (dz - mdy - (x - mean) * invstd^2 * mdyx)
**   eval:     dx = w * dz  (the running statistics are constants)
**   dweight and dbias as in backward_block; daddend = dz. */
static ln_status bn_backward(ln_node *node, ln_tensor **grad_out, ln_tensor **grad_in) {
  const ln_bn_saved *s = node->extra;
  ln_tensor *g = grad_out[0], *x = ln_node_saved(node, 0);
  if (!g) return LN_OK;
  if (!x) return ln_last_status();
  ln_tensor *w = ln_node_saved(node, 1), *b = ln_node_saved(node, 2);
  bool need_x = node->next[0].node, need_w = node->next[1].node, need_b = node->next[2].node;
  bool need_a = s->relu && node->next[3].node;
  int64_t C = s->C, M = C ? ln_tensor_numel(x) / C : 0;
  ln_dtype dt = ln_tensor_dtype(x);
  ln_status st = LN_OK;
  bn_grads t = { .x = x, .sums = (s->training && need_x) || need_w || need_b };
  double *buf = ln_scratch_zeroed(sizeof(double) * (size_t)(6 * C + 1));
  if (!buf) return ln_error(LN_ENOMEM, "out of memory in batch_norm backward");
  double *wv = buf;
  t.wr = wv + C, t.sdy = t.wr + C, t.sdyx = t.sdy + C, t.gw = t.sdyx + C, t.gb = t.gw + C;
  if (M == 0) {  /* empty input: zero gradients */
    if ((need_x && !(grad_in[0] = zeros_like(x))) || (need_w && !(grad_in[1] = zeros_like(w))) ||
        (need_b && !(grad_in[2] = zeros_like(b))) || (need_a && !(grad_in[3] = zeros_like(x))))
      goto fail;
    ln_scratch_free(buf);
    return LN_OK;
  }
  ln_bn_plan plan;
  ln_bn_plan_for(x, &plan);  /* x is what the forward's kernels ran on */
  if (s->relu && !(t.mask = ln_node_saved(node, 3))) goto fail;
  if (!(t.dy = ln_bn_laid_out(&plan, &s->blocks, x, g))) goto fail;
  if ((need_x && !(t.dx = ln_bn_empty(&plan, x, dt))) ||
      (need_a && !(t.dz = ln_bn_empty(&plan, x, dt))))
    goto fail;
  st = ln_tensor_device(x).type == LN_CPU
         ? cpu_backward(s, &t, w, b, need_w, need_b, wv, grad_in)
         : device_backward(s, &t, w, b, need_w, need_b, grad_in);
  if (st != LN_OK) goto fail;
  grad_in[0] = t.dx;
  if (s->relu) grad_in[3] = t.dz;
  t.dx = t.dz = NULL;
  goto done;
fail:
  st = ln_last_status() != LN_OK ? ln_last_status() : LN_ENOMEM;
  for (int i = 0; i < node->n_inputs; i++) {
    ln_tensor_release(grad_in[i]);
    grad_in[i] = NULL;
  }
done:
  ln_tensor_release(t.dy);
  ln_tensor_release(t.dx);
  ln_tensor_release(t.dz);
  ln_scratch_free(buf);
  return st;
}

ln_status ln_bn_record(ln_tensor *out, const ln_bn_args *a, ln_tensor *x, ln_tensor *mask,
                       ln_bn_saved *s) {
  ln_tensor *inputs[4] = { a->input, a->weight, a->bias, a->addend };
  const char *name = a->relu ? "FusedBatchNormBackward0"
                     : a->renorm ? "BatchRenormBackward0" : "NativeBatchNormBackward0";
  ln_node *node = ln_node_new(name, bn_backward, inputs, a->relu ? 4 : 3, 1);
  if (!node) goto fail;
  node->extra = s;
  node->free_extra = ln_bn_saved_free;
  s = NULL;
  ln_tensor *src[3] = { x, a->weight, a->bias };
  for (int i = 0; i < 3; i++) {  /* aliases without history: no cycles */
    ln_tensor *alias = src[i] ? ln_detach(src[i]) : NULL;
    if (src[i] && !alias) goto fail;
    ln_node_save(node, alias);
    ln_tensor_release(alias);
  }
  if (mask) ln_node_save(node, mask);
  ln_set_history(out, node, 0);
  ln_node_release(node);
  return LN_OK;
fail:
  ln_bn_saved_free(s);
  ln_node_release(node);
  return ln_last_status() != LN_OK ? ln_last_status()
                                   : ln_error(LN_ENOMEM, "out of memory in batch_norm");
}
