/*
** tensor.h -- strided tensors: creation, properties, views, reference counts.
** Dimensions are 0-based here; the Lua layer converts from 1-based.
** Ownership: every function returning ln_tensor* returns a NEW reference
** (release it with ln_tensor_release) or NULL with a message set; tensor
** arguments are borrowed unless a comment says otherwise.
*/
#ifndef LN_TENSOR_H
#define LN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "dtype.h"
#include "status.h"
#include "storage.h"

#define LN_MAX_DIMS 8

typedef struct ln_tensor ln_tensor;

typedef enum ln_memory_format {
  LN_CONTIGUOUS = 0,   /* row-major: NCHW */
  LN_CHANNELS_LAST,    /* NHWC for 4D, NDHWC for 5D */
  LN_PRESERVE          /* keep the input's format where one is defined */
} ln_memory_format;

/* Initialise the library (backends); safe to call more than once. */
void ln_init(void);

/* ---- creation (contiguous unless said) ---- */
ln_tensor *ln_empty(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev);
ln_tensor *ln_empty_format(const int64_t *sizes, int ndim, ln_dtype dtype,
                           ln_device dev, ln_memory_format fmt);
ln_tensor *ln_zeros(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev);
ln_tensor *ln_ones(const int64_t *sizes, int ndim, ln_dtype dtype, ln_device dev);
ln_tensor *ln_full(const int64_t *sizes, int ndim, double value, ln_dtype dtype,
                   ln_device dev);
ln_tensor *ln_scalar(double value, ln_dtype dtype);            /* 0-dim, CPU, as full */
ln_tensor *ln_arange(double start, double end, double step, ln_dtype dtype);
/* int64 start, start + step, ... short of end, counted and stepped in exact
** integer arithmetic as PyTorch's int64 arange (bounds anywhere in int64). */
ln_tensor *ln_arange_int(int64_t start, int64_t end, int64_t step);
/* A tensor over existing storage (retained), with explicit geometry;
** checks that every reachable element lies inside the storage. */
ln_tensor *ln_from_storage(ln_storage *s, ln_dtype dtype, const int64_t *sizes,
                           const int64_t *strides, int ndim, int64_t offset);
/* Same sizes/dtype/device as t, contiguous (or t's format with LN_PRESERVE). */
ln_tensor *ln_empty_like(const ln_tensor *t, ln_memory_format fmt);

/* ---- reference counting ---- */
void ln_tensor_retain(ln_tensor *t);
void ln_tensor_release(ln_tensor *t);   /* NULL is fine */
int ln_tensor_refcount(const ln_tensor *t);
/* Number of ln_tensor structs alive (for leak tests). */
int64_t ln_tensor_live_count(void);

/* ---- properties ---- */
int ln_tensor_dim(const ln_tensor *t);
int64_t ln_tensor_size(const ln_tensor *t, int dim);      /* dim must be valid */
int64_t ln_tensor_stride(const ln_tensor *t, int dim);    /* in elements */
const int64_t *ln_tensor_sizes(const ln_tensor *t);
const int64_t *ln_tensor_strides(const ln_tensor *t);
int64_t ln_tensor_offset(const ln_tensor *t);             /* in elements */
int64_t ln_tensor_numel(const ln_tensor *t);
ln_dtype ln_tensor_dtype(const ln_tensor *t);
ln_device ln_tensor_device(const ln_tensor *t);
ln_storage *ln_tensor_storage(const ln_tensor *t);        /* borrowed */
/* Address of the first element (storage data + offset * elem size). */
void *ln_tensor_data(const ln_tensor *t);
bool ln_tensor_is_contiguous(const ln_tensor *t, ln_memory_format fmt);
/* The format a new tensor "like" t should have: channels-last when t is
** 4D/5D and channels-last contiguous but not plain contiguous. */
ln_memory_format ln_tensor_suggest_format(const ln_tensor *t);
bool ln_tensor_same_shape(const ln_tensor *a, const ln_tensor *b);
/* PyTorch's error for writing into t when some memory location is more
** than one of its elements (a stride-0 dim of size > 1, as expand makes). */
ln_status ln_check_no_internal_overlap(const ln_tensor *t);

/* Wrap a possibly negative dim into [0, ndim) or fail with PyTorch's
** "Dimension out of range (expected to be in range of [-2, 1], but got 2)".
** The message uses 0-based numbers; the Lua layer rewrites it 1-based. */
ln_status ln_wrap_dim(int dim, int ndim, int *out);

/* Element access as double, for CPU tensors (index has ndim entries). */
double ln_tensor_get(const ln_tensor *t, const int64_t *index);
ln_status ln_tensor_item(const ln_tensor *t, double *out); /* numel must be 1 */

/* ---- views: share storage, no copy ---- */
ln_tensor *ln_view(ln_tensor *t, const int64_t *sizes, int ndim); /* one size may be -1 */
ln_tensor *ln_reshape(ln_tensor *t, const int64_t *sizes, int ndim); /* view or copy */
ln_tensor *ln_permute(ln_tensor *t, const int *dims, int ndim);
ln_tensor *ln_transpose(ln_tensor *t, int d0, int d1);
ln_tensor *ln_narrow(ln_tensor *t, int dim, int64_t start, int64_t length);
ln_tensor *ln_select(ln_tensor *t, int dim, int64_t index); /* drops dim */
ln_tensor *ln_expand(ln_tensor *t, const int64_t *sizes, int ndim); /* -1 keeps */
ln_tensor *ln_squeeze(ln_tensor *t, int dim);
ln_tensor *ln_unsqueeze(ln_tensor *t, int dim);
ln_tensor *ln_flatten(ln_tensor *t, int start_dim, int end_dim);
/* Same data, no autograd history: an alias that shares storage. */
ln_tensor *ln_detach(ln_tensor *t);

/* ---- copies and conversions ---- */
ln_tensor *ln_contiguous(ln_tensor *t, ln_memory_format fmt); /* t itself if already */
ln_tensor *ln_clone(ln_tensor *t, ln_memory_format fmt);
ln_tensor *ln_to_dtype(ln_tensor *t, ln_dtype dtype);   /* t itself if same */
ln_tensor *ln_to_device(ln_tensor *t, ln_device dev);   /* t itself if same */
/* dst[...] = src broadcast to dst's shape, converting dtype and device. */
ln_status ln_copy_(ln_tensor *dst, ln_tensor *src);
/* Refuses a value t's dtype cannot hold (ln_dtype_fits), as PyTorch's
** fill_: "value cannot be converted to type int64_t without overflow". */
ln_status ln_fill_(ln_tensor *t, double value);
/* An integer, exactly into an int64 tensor (a double holds 53 bits). */
ln_status ln_fill_int_(ln_tensor *t, int64_t value);
ln_status ln_zero_(ln_tensor *t);

/* ---- autograd fields (see autograd.h for the engine) ---- */
bool ln_tensor_requires_grad(const ln_tensor *t);
/* Only leaves may change the flag; a non-float tensor cannot require grad. */
ln_status ln_tensor_set_requires_grad(ln_tensor *t, bool flag);
bool ln_tensor_is_leaf(const ln_tensor *t);
ln_tensor *ln_tensor_grad(const ln_tensor *t);            /* borrowed, may be NULL */
void ln_tensor_set_grad(ln_tensor *t, ln_tensor *grad);   /* retains grad; NULL clears */

/* Replace t's data (storage, dtype, geometry) by src's, keeping t's
** identity, as PyTorch's `param.data = ...`: module.to() converts
** parameters this way so that references held elsewhere stay valid. */
ln_status ln_tensor_set_data(ln_tensor *t, ln_tensor *src);

/* Parameters are tensors flagged as such (nn.Parameter); the flag only
** tells the module system how to register an assigned tensor. */
bool ln_tensor_is_parameter(const ln_tensor *t);
void ln_tensor_set_parameter(ln_tensor *t, bool flag);

#endif
