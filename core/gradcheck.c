/*
** gradcheck.c -- finite-difference check of autograd (see gradcheck.h).
** Works on CPU data directly: elements are addressed through strides, so
** non-contiguous inputs and outputs are fine.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "tensor_impl.h"

static ln_status failed(void) {
  ln_status st = ln_last_status();
  return st != LN_OK ? st : LN_ERUNTIME;
}

/* Address of element k (row-major order) of a CPU tensor. */
static void *elem_ptr(const ln_tensor *t, int64_t k) {
  int64_t off = 0;
  for (int d = t->ndim - 1; d >= 0; d--) {
    off += (k % t->sizes[d]) * t->strides[d];
    k /= t->sizes[d];
  }
  return (char *)ln_tensor_data(t) + off * (int64_t)ln_dtype_size(t->dtype);
}

/* The weight of output element k: a fixed pseudo-random value in
** +-[0.1, 1) (splitmix64 of k), the same in every run. */
static double weight(int64_t k) {
  uint64_t z = (uint64_t)k + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  double u = (double)(z >> 11) * 0x1.0p-53;
  return (z & 1 ? -1.0 : 1.0) * (0.1 + 0.9 * u);
}

static bool wants_grad(ln_tensor *t) { return t && t->requires_grad; }

static ln_status check_inputs(ln_tensor *const *inputs, int n) {
  int nreq = 0;
  for (int i = 0; i < n; i++) {
    ln_tensor *t = inputs[i];
    if (!wants_grad(t)) continue;
    nreq++;
    if (t->dtype != LN_F64)
      return ln_error(LN_EINVAL, "gradcheck: input %d requires grad but is %s; "
                      "gradcheck needs float64 inputs", i, ln_dtype_name(t->dtype));
    if (ln_tensor_device(t).type != LN_CPU)
      return ln_error(LN_EINVAL, "gradcheck: input %d is not on the CPU", i);
    for (int d = 0; d < t->ndim; d++)
      if (t->strides[d] == 0 && t->sizes[d] > 1)
        return ln_error(LN_EINVAL, "gradcheck: input %d has overlapping memory "
                        "(an expanded tensor); pass a contiguous copy", i);
  }
  if (nreq == 0)
    return ln_error(LN_EINVAL, "gradcheck expects at least one input tensor to "
                    "require gradient, but none of them have requires_grad=True.");
  return LN_OK;
}

/* sum(fn(inputs) * w), evaluated in double. */
static ln_status weighted_output(ln_gradcheck_fn fn, void *ud,
                                 ln_tensor *const *inputs, int n, double *out) {
  ln_tensor *y = fn(inputs, n, ud);
  if (!y) return failed();
  if (ln_tensor_device(y).type != LN_CPU) {
    ln_tensor_release(y);
    return ln_error(LN_EINVAL, "gradcheck: the function's output is not on the CPU");
  }
  double s = 0;
  for (int64_t k = 0, m = ln_tensor_numel(y); k < m; k++)
    s += weight(k) * ln_load_double(elem_ptr(y, k), y->dtype);
  ln_tensor_release(y);
  *out = s;
  return LN_OK;
}

/* grads[i] = d sum(fn(inputs) * w) / d inputs[i] by ln_backward (NEW refs;
** NULL where no gradient reached the input). The inputs' own .grad is put
** aside and restored. */
static ln_status analytical(ln_gradcheck_fn fn, void *ud, ln_tensor *const *inputs,
                            int n, ln_tensor **grads) {
  ln_status st = LN_OK;
  ln_tensor *y = NULL, *w = NULL;
  ln_tensor **old = calloc((size_t)n, sizeof *old);
  if (!old) return ln_error(LN_ENOMEM, "out of memory in gradcheck");
  bool prev = ln_set_grad_enabled(true);
  for (int i = 0; i < n; i++)
    if (wants_grad(inputs[i])) {
      old[i] = inputs[i]->grad;
      inputs[i]->grad = NULL;
    }
  if (!(y = fn(inputs, n, ud))) {
    st = failed();
    goto done;
  }
  if (ln_tensor_device(y).type != LN_CPU) {
    st = ln_error(LN_EINVAL, "gradcheck: the function's output is not on the CPU");
    goto done;
  }
  if (y->requires_grad && ln_tensor_numel(y) > 0) {
    if (!(w = ln_empty(y->sizes, y->ndim, LN_F64, LN_DEVICE_CPU))) {
      st = failed();
      goto done;
    }
    for (int64_t k = 0, m = ln_tensor_numel(w); k < m; k++)
      ln_store_double(elem_ptr(w, k), LN_F64, weight(k));
    st = ln_backward(y, w, false);
  }
done:
  for (int i = 0; i < n; i++)
    if (wants_grad(inputs[i])) {
      grads[i] = inputs[i]->grad;
      inputs[i]->grad = old[i];
    }
  ln_set_grad_enabled(prev);
  ln_tensor_release(w);
  ln_tensor_release(y);
  free(old);
  return st;
}

/* Central difference for element k of input i, restoring the element. */
static ln_status numerical(ln_gradcheck_fn fn, void *ud, ln_tensor *const *inputs,
                           int n, int i, int64_t k, double eps, double *out) {
  double *p = elem_ptr(inputs[i], k), orig = *p, fp = 0, fm = 0;
  *p = orig + eps;
  ln_status st = weighted_output(fn, ud, inputs, n, &fp);
  if (st == LN_OK) {
    *p = orig - eps;
    st = weighted_output(fn, ud, inputs, n, &fm);
  }
  *p = orig;
  *out = (fp - fm) / (2 * eps);
  return st;
}

ln_status ln_gradcheck(ln_gradcheck_fn fn, void *ud, ln_tensor *const *inputs,
                       int n, double eps, double atol, double rtol,
                       char *report, size_t report_size) {
  ln_tensor **grads = NULL;
  ln_status st = check_inputs(inputs, n);
  if (st != LN_OK) goto done;
  if (!(grads = calloc((size_t)n, sizeof *grads))) {
    st = ln_error(LN_ENOMEM, "out of memory in gradcheck");
    goto done;
  }
  if ((st = analytical(fn, ud, inputs, n, grads)) != LN_OK) goto done;
  bool prev = ln_set_grad_enabled(false);
  for (int i = 0; st == LN_OK && i < n; i++) {
    if (!wants_grad(inputs[i])) continue;
    for (int64_t k = 0, m = ln_tensor_numel(inputs[i]); k < m; k++) {
      double num, ana = grads[i] ? ln_load_double(elem_ptr(grads[i], k),
                                                  grads[i]->dtype) : 0.0;
      if ((st = numerical(fn, ud, inputs, n, i, k, eps, &num)) != LN_OK) break;
      if (!(fabs(ana - num) <= atol + rtol * fabs(num))) {  /* NaN fails too */
        st = ln_error(LN_ERUNTIME, "Jacobian mismatch for output 0 with respect "
                      "to input %d, element %lld: numerical %.10g, analytical "
                      "%.10g (atol=%g, rtol=%g)", i, (long long)k, num, ana,
                      atol, rtol);
        break;
      }
    }
  }
  ln_set_grad_enabled(prev);
done:
  for (int i = 0; grads && i < n; i++) ln_tensor_release(grads[i]);
  free(grads);
  if (report && report_size > 0)
    snprintf(report, report_size, "%s", st == LN_OK ? "" : ln_last_error());
  return st;
}
