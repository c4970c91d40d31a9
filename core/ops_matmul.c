/*
** ops_matmul.c -- torch.matmul: dot (1D.1D), matrix-vector, matrix-matrix
** and batched products with broadcast batch dims, and their backward.
**
** float32/float64 go to OpenBLAS through ln_gemm. An operand whose
** matrices have a unit stride along one of their two dims is passed as is
** (transposed views become a transposed operand with the original leading
** dimension); others are made
** contiguous first. float16/bfloat16 compute in float32; int64 uses a
** plain loop.
**
** Tensors on a device go to its kernel table's gemm (cuBLAS on CUDA) in
** one strided-batched call, float16/bfloat16 as they are (float32
** accumulation); an operand whose batch matrices are not evenly spaced is
** expanded and made contiguous first.
*/
#include <limits.h>
#include <string.h>

#include "blas.h"
#include "device_kernels.h"
#include "ops_impl.h"

/* The shapes of a product after 1D operands became [1, k] and [k, 1]. */
typedef struct mm_geom {
  bool a1, b1;                 /* a (b) was 1D */
  int nb;                      /* batch dims of the result */
  int64_t batch[LN_MAX_DIMS];
  int64_t m, k, n;
} mm_geom;

static ln_status mm_geometry(const ln_tensor *a, const ln_tensor *b, mm_geom *g) {
  if (a->ndim == 0 || b->ndim == 0)
    return ln_error(LN_EINVAL, "both arguments to matmul need to be at least 1D, but they "
                    "are %dD and %dD", a->ndim, b->ndim);
  g->a1 = a->ndim == 1;
  g->b1 = b->ndim == 1;
  g->m = g->a1 ? 1 : a->sizes[a->ndim - 2];
  g->k = a->sizes[a->ndim - 1];
  int64_t kb = g->b1 ? b->sizes[0] : b->sizes[b->ndim - 2];
  g->n = g->b1 ? 1 : b->sizes[b->ndim - 1];
  if (g->a1 && g->b1 && g->k != kb)
    return ln_error(LN_EINVAL, "inconsistent tensor size, expected tensor [%lld] and src "
                    "[%lld] to have the same number of elements, but got %lld and %lld "
                    "elements respectively", (long long)g->k, (long long)kb,
                    (long long)g->k, (long long)kb);
  if (b->ndim == 1 && a->ndim == 2 && g->k != kb)
    return ln_error(LN_EINVAL, "size mismatch, got input (%lld), mat (%lldx%lld), vec (%lld)",
                    (long long)g->m, (long long)g->m, (long long)g->k, (long long)kb);
  if (g->k != kb)
    return ln_error(LN_EINVAL, "mat1 and mat2 shapes cannot be multiplied (%lldx%lld and "
                    "%lldx%lld)", (long long)g->m, (long long)g->k, (long long)kb,
                    (long long)g->n);
  int na = a->ndim > 2 ? a->ndim - 2 : 0, nbb = b->ndim > 2 ? b->ndim - 2 : 0;
  g->nb = na > nbb ? na : nbb;
  for (int d = 0; d < g->nb; d++) {
    int ia = d - (g->nb - na), ib = d - (g->nb - nbb);
    int64_t sa = ia >= 0 ? a->sizes[ia] : 1, sb = ib >= 0 ? b->sizes[ib] : 1;
    if (sa != sb && sa != 1 && sb != 1)
      return ln_error(LN_EINVAL, "The size of tensor a (%lld) must match the size of tensor "
                      "b (%lld) at non-singleton dimension %d", (long long)sa, (long long)sb, d);
    g->batch[d] = sa == 1 ? sb : sa;
  }
  return LN_OK;
}

/* Result sizes: batch, then m unless a was 1D, then n unless b was 1D. */
static int mm_out_sizes(const mm_geom *g, int64_t *sizes, bool squeeze) {
  int nd = g->nb;
  memcpy(sizes, g->batch, sizeof(int64_t) * (size_t)g->nb);
  if (!squeeze || !g->a1) sizes[nd++] = g->m;
  if (!squeeze || !g->b1) sizes[nd++] = g->n;
  return nd;
}

/* A 1D operand as a matrix: a -> [1, k], b -> [k, 1] (views). */
static ln_tensor *as_matrix(ln_tensor *t, bool was_1d, int dim) {
  if (was_1d) return ln_unsqueeze(t, dim);
  ln_tensor_retain(t);
  return t;
}

/* How to hand a rows x cols matrix with strides (rs, cs) to BLAS, if it
** can be: row-major (ld = rs) or transposed (ld = cs). */
static bool blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                        bool *tr, int64_t *ld) {
  int64_t minr = cols > 1 ? cols : 1, minc = rows > 1 ? rows : 1;
  if (cs == 1 || cols == 1) {
    *ld = rows == 1 ? minr : rs;
    *tr = false;
    if (*ld >= minr && *ld <= INT_MAX) return true;
  }
  if (rs == 1 || rows == 1) {
    *ld = cols == 1 ? minc : cs;
    *tr = true;
    if (*ld >= minc && *ld <= INT_MAX) return true;
  }
  return false;
}

/* Byte offset of batch index i in t (t's batch dims broadcast to g's). */
static int64_t batch_offset(const ln_tensor *t, const mm_geom *g, int64_t i) {
  int nt = t->ndim - 2;
  int64_t off = 0;
  for (int d = g->nb - 1; d >= 0; d--) {
    int64_t idx = i % g->batch[d];
    i /= g->batch[d];
    int k = d - (g->nb - nt);
    if (k >= 0 && t->sizes[k] != 1) off += idx * t->strides[k];
  }
  return off * (int64_t)ln_dtype_size(t->dtype);
}

/* out (contiguous, batch x m x n) = a @ b for matrices a, b (>= 2D) of
** the float32/float64/int64 dtype of out. BLAS-incompatible layouts
** have already been made contiguous. */
static void mm_compute(ln_tensor *a, ln_tensor *b, ln_tensor *out, const mm_geom *g) {
  int64_t nbatch = 1;
  for (int d = 0; d < g->nb; d++) nbatch *= g->batch[d];
  const int64_t *as = a->strides + a->ndim - 2, *bs = b->strides + b->ndim - 2;
  bool ta = false, tb = false;
  int64_t lda = 0, ldb = 0;
  if (out->dtype != LN_I64) {
    blas_layout(g->m, g->k, as[0], as[1], &ta, &lda);
    blas_layout(g->k, g->n, bs[0], bs[1], &tb, &ldb);
  }
  size_t es = ln_dtype_size(out->dtype);
  for (int64_t i = 0; i < nbatch; i++) {
    const char *pa = (const char *)ln_tensor_data(a) + batch_offset(a, g, i);
    const char *pb = (const char *)ln_tensor_data(b) + batch_offset(b, g, i);
    char *pc = (char *)ln_tensor_data(out) + i * g->m * g->n * (int64_t)es;
    if (out->dtype != LN_I64) {
      ln_gemm(out->dtype, ta, tb, g->m, g->n, g->k, 1.0, pa, lda, pb, ldb, 0.0, pc,
              g->n > 1 ? g->n : 1);
    } else {
      int64_t *c = (int64_t *)pc;
      for (int64_t r = 0; r < g->m; r++)
        for (int64_t col = 0; col < g->n; col++) {
          uint64_t acc = 0;  /* unsigned: wraps as PyTorch's (signed overflow is UB) */
          for (int64_t j = 0; j < g->k; j++)
            acc += (uint64_t)*(const int64_t *)(pa + (r * as[0] + j * as[1]) * 8) *
                   (uint64_t)*(const int64_t *)(pb + (j * bs[0] + col * bs[1]) * 8);
          c[r * g->n + col] = (int64_t)acc;
        }
    }
  }
}

/* The one stride (elements) between consecutive batch matrices of t, its
** batch dims broadcast to g's, if there is one. */
static bool batch_stride(const ln_tensor *t, const mm_geom *g, int64_t *stride) {
  int nt = t->ndim - 2;
  int64_t span = 1;
  bool known = false;
  *stride = 0;
  for (int d = g->nb - 1; d >= 0; d--) {
    if (g->batch[d] == 1) continue;
    int k = d - (g->nb - nt);
    int64_t s = k >= 0 && t->sizes[k] != 1 ? t->strides[k] : 0;
    if (!known) *stride = s;
    else if (s != *stride * span) return false;
    known = true;
    span *= g->batch[d];
  }
  return true;
}

/* t (new reference) with evenly spaced batch matrices, *stride apart:
** t itself, or t expanded to g's batch and made contiguous. */
static ln_tensor *evenly_batched(ln_tensor *t, const mm_geom *g, int64_t *stride) {
  if (batch_stride(t, g, stride)) {
    ln_tensor_retain(t);
    return t;
  }
  int64_t sizes[LN_MAX_DIMS + 2];
  memcpy(sizes, g->batch, sizeof(int64_t) * (size_t)g->nb);
  sizes[g->nb] = t->sizes[t->ndim - 2];
  sizes[g->nb + 1] = t->sizes[t->ndim - 1];
  ln_tensor *e = ln_expand(t, sizes, g->nb + 2);
  ln_tensor *c = e ? ln_contiguous(e, LN_CONTIGUOUS) : NULL;
  ln_tensor_release(e);
  *stride = sizes[g->nb] * sizes[g->nb + 1];
  return c;
}

/* out (contiguous, batch x m x n) = a @ b on their device, in one
** strided-batched gemm of the device's kernels; a and b are matrices
** (>= 2D) of out's float dtype in layouts blas_layout accepts. */
static ln_status mm_device(ln_tensor *a, ln_tensor *b, ln_tensor *out, const mm_geom *g) {
  ln_device dev = ln_tensor_device(out);
  const ln_device_kernels *k = ln_device_kernels_get(dev);
  if (!k || !k->gemm) return ln_cpu_only("matmul", dev);
  int64_t nbatch = 1, sa, sb, lda = 0, ldb = 0;
  for (int d = 0; d < g->nb; d++) nbatch *= g->batch[d];
  ln_tensor *ae = evenly_batched(a, g, &sa), *be = ae ? evenly_batched(b, g, &sb) : NULL;
  ln_status st = LN_OK;
  if (!ae || !be) {
    st = ln_last_status();
  } else {
    const int64_t *as = ae->strides + ae->ndim - 2, *bs = be->strides + be->ndim - 2;
    bool ta = false, tb = false;
    blas_layout(g->m, g->k, as[0], as[1], &ta, &lda);
    blas_layout(g->k, g->n, bs[0], bs[1], &tb, &ldb);
    st = k->gemm(dev.index, out->dtype, ta, tb, g->m, g->n, g->k, 1.0, ln_tensor_data(ae),
                 lda, ln_tensor_data(be), ldb, 0.0, ln_tensor_data(out), g->n > 1 ? g->n : 1,
                 nbatch, sa, sb, g->m * g->n);
  }
  ln_tensor_release(ae);
  ln_tensor_release(be);
  return st;
}

/* Operand as BLAS can take it: converted to the compute dtype, and
** contiguous when its matrices have no unit stride. */
static ln_tensor *blas_operand(ln_tensor *t, ln_dtype ct) {
  ln_tensor *c = ln_to_dtype(t, ct);
  if (!c || ct == LN_I64) return c;
  bool tr;
  int64_t ld, r = c->sizes[c->ndim - 2], k = c->sizes[c->ndim - 1];
  if (blas_layout(r, k, c->strides[c->ndim - 2], c->strides[c->ndim - 1], &tr, &ld)) return c;
  ln_tensor *cc = ln_contiguous(c, LN_CONTIGUOUS);
  ln_tensor_release(c);
  return cc;
}

/* The product without autograd (grad mode must be off). */
static ln_tensor *matmul_nograd(ln_tensor *a, ln_tensor *b, const mm_geom *g) {
  int64_t sizes[LN_MAX_DIMS + 2];
  int nd = mm_out_sizes(g, sizes, true);
  ln_device dev = ln_tensor_device(a);
  ln_dtype dt = a->dtype, ct = dev.type == LN_CPU ? ln_kernel_dtype(dt) : dt;
  ln_tensor *a2 = NULL, *b2 = NULL, *ac = NULL, *bc = NULL, *out = NULL, *res = NULL;
  if (!(out = ln_empty(sizes, nd, ct, dev))) return NULL;
  if (g->k == 0) {
    if (ln_zero_(out) != LN_OK) goto done;
  } else if (ln_tensor_numel(out) > 0) {
    if (g->m > INT_MAX || g->n > INT_MAX || g->k > INT_MAX) {
      ln_error(LN_EINVAL, "matmul: matrix dims beyond %d are not supported", INT_MAX);
      goto done;
    }
    if (!(a2 = as_matrix(a, g->a1, 0)) || !(b2 = as_matrix(b, g->b1, 1)) ||
        !(ac = blas_operand(a2, ct)) || !(bc = blas_operand(b2, ct)))
      goto done;
    if (dev.type == LN_CPU) mm_compute(ac, bc, out, g);
    else if (mm_device(ac, bc, out, g) != LN_OK) goto done;
  }
  res = ln_to_dtype(out, dt);
done:
  ln_tensor_release(a2);
  ln_tensor_release(b2);
  ln_tensor_release(ac);
  ln_tensor_release(bc);
  ln_tensor_release(out);
  return res;
}

/* ---- backward: in the space where 1D operands are matrices,
** ga = g @ b^T and gb = a^T @ g, summed over broadcast batch dims ---- */

static ln_tensor *transposed(ln_tensor *t) {
  return ln_transpose(t, t->ndim - 2, t->ndim - 1);
}

/* r (consumed) summed to the shape of the matrix form m of an input and
** reshaped to the input t's shape. */
static ln_tensor *fit_input(ln_tensor *r, const ln_tensor *m, ln_tensor *t) {
  if (!r) return NULL;
  ln_tensor *s = ln_sum_to_size(r, m->sizes, m->ndim);
  ln_tensor_release(r);
  if (!s) return NULL;
  ln_tensor *v = ln_reshape(s, t->sizes, t->ndim);
  ln_tensor_release(s);
  return v;
}

/* saved: a, b */
static ln_status matmul_backward(ln_node *node, ln_tensor **gout, ln_tensor **gin) {
  ln_tensor *a = ln_node_saved(node, 0), *b = ln_node_saved(node, 1);
  ln_tensor *a2 = NULL, *b2 = NULL, *g2 = NULL, *t = NULL;
  ln_status st = LN_OK;
  mm_geom g;
  int64_t sizes[LN_MAX_DIMS + 2];
  if (!a || !b) return ln_last_status();
  if ((st = mm_geometry(a, b, &g)) != LN_OK) return st;
  int nd = mm_out_sizes(&g, sizes, false);
  if (!(a2 = as_matrix(a, g.a1, 0)) || !(b2 = as_matrix(b, g.b1, 1)) ||
      !(g2 = ln_reshape(gout[0], sizes, nd)))
    goto fail;
  if (ln_needs_grad(node, 0)) {
    if (!(t = transposed(b2)) || !(gin[0] = fit_input(ln_matmul(g2, t), a2, a))) goto fail;
    ln_tensor_release(t);
    t = NULL;
  }
  if (ln_needs_grad(node, 1)) {
    if (!(t = transposed(a2)) || !(gin[1] = fit_input(ln_matmul(t, g2), b2, b))) goto fail;
  }
  goto done;
fail:
  st = ln_last_status();
done:
  ln_tensor_release(a2);
  ln_tensor_release(b2);
  ln_tensor_release(g2);
  ln_tensor_release(t);
  return st;
}

static const char *backward_name(const ln_tensor *a, const ln_tensor *b) {
  if (a->ndim == 1 && b->ndim == 1) return "DotBackward0";
  if (a->ndim == 2 && b->ndim == 1) return "MvBackward0";
  if (a->ndim <= 2 && b->ndim == 2) return "MmBackward0";
  if (a->ndim == 3 && b->ndim == 3 && a->sizes[0] == b->sizes[0]) return "BmmBackward0";
  return "MatmulBackward0";
}

ln_tensor *ln_matmul(ln_tensor *a, ln_tensor *b) {
  ln_tensor *ts[2] = { a, b };
  ln_device dev;
  mm_geom g;
  if (ln_common_device(ts, 2, &dev) != LN_OK || mm_geometry(a, b, &g) != LN_OK) return NULL;
  if (a->dtype != b->dtype) {
    ln_error(LN_EINVAL, "expected m1 and m2 to have the same dtype, but got: %s != %s",
             ln_dtype_name(a->dtype), ln_dtype_name(b->dtype));
    return NULL;
  }
  if (a->dtype == LN_BOOL || (dev.type != LN_CPU && a->dtype == LN_I64)) {
    ln_error(LN_EINVAL, "\"%s\" not implemented for '%s'",
             dev.type == LN_CPU ? "addmm_impl_cpu_" : "addmm_cuda", ln_torch_type_name(a->dtype));
    return NULL;
  }
  bool prev = ln_set_grad_enabled(false);  /* internal copies need no history */
  ln_tensor *out = matmul_nograd(a, b, &g);
  ln_set_grad_enabled(prev);
  if (out && ln_any_requires_grad(ts, 2)) {
    ln_node *node = ln_record(backward_name(a, b), matmul_backward, out, ts, 2);
    if (!node) {
      ln_tensor_release(out);
      return NULL;
    }
    ln_node_save(node, a);
    ln_node_save(node, b);
  }
  return out;
}
