/*
** layers_impl.h -- what the layer files (nn/linear.c, conv2d.c, pooling.c,
** dropout.c, activation.c, softmax.c, loss.c) share: PyTorch's text for
** sizes and types (floats: pyrepr.h), in-place results, the float16 round trip,
** module construction and the ln_layer_type table. For nn/ files only.
*/
#ifndef LN_LAYERS_IMPL_H
#define LN_LAYERS_IMPL_H

#include <stddef.h>

#include "layers.h"
#include "pyrepr.h"   /* ln_py_float */

/* ---- text ---- */
/* "[2, 4, 5, 5]" (PyTorch's sizes in messages). Returns buf. */
const char *ln_layer_sizes_str(const ln_tensor *t, char *buf, size_t n);
/* PyTorch's scalar type name: "Float", "Double", "Half", "BFloat16", "Long", "Bool". */
const char *ln_layer_torch_type(ln_dtype t);
/* printf at buf + *k, advancing *k; nothing once the buffer is full. */
void ln_layer_append(char *buf, size_t size, size_t *k, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 4, 5)))
#endif
  ;
/* "3" or "(3, 4)": a pair as PyTorch prints an int or a tuple. */
const char *ln_layer_pair_str(const int64_t v[2], bool pair, char *buf, size_t n);

/* ---- ops ---- */
/* LN_OK when t is a floating tensor on the CPU, or on another device when
** device_ok (its table has the op: LN_LAYER_HAS, nn/layers_device.h);
** else PyTorch's "\"op\" not implemented for 'Long'" or "op is not
** implemented for cuda:0 tensors yet". */
ln_status ln_layer_check_float(const char *op, const ln_tensor *t, bool device_ok);
/* The end of an in-place op on x whose result y was computed out of
** place: copy y into x and give x y's history (PyTorch's rebase_history).
** Refuses a leaf that requires grad (checked by ln_layer_check_inplace
** before any work). Returns a new reference to x. Consumes y. */
ln_status ln_layer_check_inplace(ln_tensor *x);
ln_tensor *ln_layer_finish_inplace(ln_tensor *x, ln_tensor *y);
/* Run a float32/float64 op on a float16/bfloat16 tensor: x converted to
** float32 (recorded), op(x32, ud), the result converted back to x's dtype.
** New reference or NULL. */
/* The end of a backward with one input gradient: tmp (a temporary, or
** NULL) is released; with st LN_OK dx becomes grad_in[0], else dx is
** released. Returns st. */
ln_status ln_layer_grad_result(ln_status st, ln_tensor *tmp, ln_tensor *dx,
                               ln_tensor **grad_in);

typedef ln_tensor *(*ln_layer_op_fn)(ln_tensor *x, void *ud);
ln_tensor *ln_layer_via_float32(ln_tensor *x, ln_layer_op_fn op, void *ud);

/* ---- modules ---- */
/* Linear's and Conv2d's parameters: "weight" of `sizes`, "bias" of
** sizes[0] (a nil slot without bias), then PyTorch's initialisation. */
ln_status ln_layer_add_weight_bias(ln_module *m, const int64_t *sizes, int ndim,
                                   bool bias, ln_dtype dtype, ln_device dev);
/* Check one input for a module's forward ("Linear.forward expects 1 input, got 2"). */
ln_status ln_layer_check_inputs(ln_module *m, ln_tensor *const *inputs, int n, int want);
/* The attribute name as a bool/int/number/string, with a message naming the
** module when it has another kind. */
ln_status ln_layer_attr_int(ln_module *m, const char *name, int64_t *out);
ln_status ln_layer_attr_number(ln_module *m, const char *name, double *out);
ln_status ln_layer_attr_bool(ln_module *m, const char *name, bool *out);
ln_status ln_layer_attr_string(ln_module *m, const char *name, const char **out);
/* Set several attributes at once; stops at the first failure. */
typedef struct ln_layer_attr { const char *name; ln_attr value; } ln_layer_attr;
ln_status ln_layer_set_attrs(ln_module *m, const ln_layer_attr *a, int n);
/* A new module of type with a copy of `size` bytes of priv (NULL: none),
** freed with free(); the type's free_priv must be ln_layer_free_priv. */
ln_module *ln_layer_module_new(const ln_module_type *type, const void *priv, size_t size);
void ln_layer_free_priv(void *priv);

#endif
