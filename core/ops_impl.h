/*
** ops_impl.h -- what the generic op files (core/ops_*.c, core/copy.c)
** share: dtype and device rules, broadcasting, dtype conversion loops, the
** elementwise driver and small autograd helpers. Internal to core/.
*/
#ifndef LN_OPS_IMPL_H
#define LN_OPS_IMPL_H

#include "autograd.h"
#include "device_kernels.h"
#include "ops.h"
#include "strided.h"
#include "tensor_impl.h"

/* ---- dtypes ---- */
/* PyTorch's ScalarType name ("Float", "Long", ...) for its messages. */
const char *ln_torch_type_name(ln_dtype t);

/* The dtype a kernel computes in for values of dtype t: float64 for
** float64, int64 for int64 and bool, float32 for the other floats. */
static inline ln_dtype ln_kernel_dtype(ln_dtype t) {
  return t == LN_F64 ? LN_F64 : (t == LN_I64 || t == LN_BOOL) ? LN_I64 : LN_F32;
}

/* The result dtype of an op on ts, as PyTorch's result_type: tensors with
** dims decide within a category, 0-dim tensors only when their category
** (bool < integer < floating) is higher. */
ln_dtype ln_result_type(ln_tensor *const *ts, int n);

/* Convert n elements between dtypes (same dtype: a strided copy). Strides
** in bytes; a source stride of 0 repeats one element. */
void ln_convert(char *dst, int64_t dst_stride, ln_dtype dt, const char *src,
                int64_t src_stride, ln_dtype st, int64_t n);

/* A loop callback that converts operands to the dtypes a typed kernel
** expects, in blocks through stack buffers, and the outputs (the first
** n_out operands, which kernels only write) back. Use it when some
** have[i] != want[i]. */
typedef struct ln_cast_ctx {
  ln_loop_fn kernel;
  void *ctx;
  int nops, n_out;
  ln_dtype have[LN_STRIDED_MAX_OPS], want[LN_STRIDED_MAX_OPS];
} ln_cast_ctx;
void ln_cast_loop(char **data, const int64_t *strides, int64_t n, void *ctx);

/* ---- devices ---- */
/* The device shared by ts (a 0-dim CPU tensor goes with any device), or
** PyTorch's "Expected all tensors to be on the same device" error. */
ln_status ln_common_device(ln_tensor *const *ts, int n, ln_device *dev);
/* LN_OK for CPU, else "<op> is not implemented for cuda tensors yet". */
ln_status ln_cpu_only(const char *op, ln_device dev);

/* ---- shapes ---- */
/* The broadcast shape of ts, or PyTorch's "The size of tensor a (3) must
** match the size of tensor b (4) at non-singleton dimension 1". */
ln_status ln_broadcast_shape(ln_tensor *const *ts, int n, int64_t *sizes, int *ndim);
/* t's strides aligned to a broadcast shape (0 where t is broadcast). */
void ln_broadcast_strides(const ln_tensor *t, const int64_t *sizes, int ndim,
                          int64_t *strides);
/* Channels-last when every input of the result's shape is channels-last
** contiguous (and one is not also plain contiguous), else contiguous. */
ln_memory_format ln_elementwise_format(const int64_t *sizes, int ndim,
                                       ln_tensor *const *ts, int n);
/* "[2, 3]" into buf, for messages. */
void ln_shape_str(const int64_t *sizes, int ndim, char *buf, size_t n);
/* Do a and b share storage (so an in-place op must copy one first)? */
bool ln_tensors_share_storage(const ln_tensor *a, const ln_tensor *b);

/* ---- kernels ---- */
/* Run kernel over out (operand 0) and inputs broadcast to out's shape,
** all on the CPU; want[i] is the dtype the kernel expects for operand i
** (out first); other dtypes are converted on the fly. */
void ln_elementwise_run(ln_tensor *out, ln_tensor *const *in, int nin,
                        const ln_dtype *want, ln_loop_fn kernel, void *ctx);
/* dst = src broadcast to dst's shape and converted to dst's dtype, both
** on the CPU; safe when they share memory. No autograd. (copy.c) */
ln_status ln_copy_cpu(ln_tensor *dst, ln_tensor *src);

/* ---- device kernels (core/device_kernels.h) ---- */

/* The description of out (operand 0) and inputs broadcast to out's shape,
** all on one device: size-1 dims dropped, dims ordered by out's strides
** and merged where contiguous for every operand (ln_strided_prepare),
** then written outermost first. nin < LN_EW_MAX_OPS. */
void ln_ew_desc_for(ln_ew_desc *d, ln_tensor *out, ln_tensor *const *in, int nin);

/* Which entry of the kernel table an elementwise op calls, and with what. */
typedef enum ln_ew_family {
  LN_EW_UNARY, LN_EW_BINARY, LN_EW_COMPARE, LN_EW_GRAD_SELECT, LN_EW_CONVERT
} ln_ew_family;
typedef struct ln_ew_call {
  ln_ew_family family;
  int op;            /* the family's op (ln_unary_op, LN_BINARY_AXPY, ln_grad_select...) */
  double alpha;      /* LN_BINARY_AXPY */
  ln_dtype compute;  /* ln_kernel_dtype of the result (not for convert) */
} ln_ew_call;

/* Run call over out (on a non-CPU device) and inputs broadcast to its
** shape. Inputs on the CPU (0-dim tensors beside device ones) are copied
** to out's device first. "<name> is not implemented for <device> tensors
** yet" when the backend lacks the entry. */
ln_status ln_device_elementwise(const char *name, const ln_ew_call *call, ln_tensor *out,
                                ln_tensor *const *in, int nin);

/* ---- autograd ---- */
/* In-place ops refuse a leaf that requires grad while grad mode is on. */
ln_status ln_check_inplace(const ln_tensor *t);
/* Record a node with one output: new node as out's grad_fn, or NULL with
** a message. The caller saves tensors and fills ints after. */
ln_node *ln_record(const char *name, ln_backward_fn fn, ln_tensor *out,
                   ln_tensor *const *inputs, int n);
/* Does input i of node need a gradient? */
static inline bool ln_needs_grad(const ln_node *node, int i) {
  return node->next[i].node != NULL;
}
/* A gradient summed down to sizes (undo broadcasting) and cast to dtype.
** New reference. */
ln_tensor *ln_grad_fit(ln_tensor *g, const int64_t *sizes, int ndim, ln_dtype dtype);

#endif
