/*
** gradcheck.h -- compare the gradients autograd computes with central
** finite differences, as torch.autograd.gradcheck (in its fast mode: one
** random but fixed projection of the output).
*/
#ifndef LN_GRADCHECK_H
#define LN_GRADCHECK_H

#include <stddef.h>

#include "tensor.h"

/* The function under test: a NEW reference computed from the n inputs
** (borrowed), or NULL with ln_error set. It must not longjmp (a Lua
** callback runs under pcall and turns an error into NULL). */
typedef ln_tensor *(*ln_gradcheck_fn)(ln_tensor *const *inputs, int n, void *ud);

/* Check d/dx sum(fn(inputs) * w) for fixed pseudo-random weights w: the
** analytical gradient by ln_backward against (f(x+eps) - f(x-eps)) / 2eps
** for every element of every input that requires grad. Those inputs must
** be float64 CPU tensors without overlapping elements; they are perturbed
** in place (and restored) under no-grad, and their .grad is left as it was.
** An element passes when |analytical - numerical| <= atol + rtol*|numerical|.
** On a mismatch returns LN_ERUNTIME with a message naming the input, the
** element (0-based, row-major) and both values; the message is also copied
** into report (when not NULL), which is "" on success. */
ln_status ln_gradcheck(ln_gradcheck_fn fn, void *ud, ln_tensor *const *inputs,
                       int n, double eps, double atol, double rtol,
                       char *report, size_t report_size);

#endif
