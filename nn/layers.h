/*
** layers.h -- the layers and losses a training script needs, on CPU, with
** PyTorch's semantics, defaults, initialisation, state-dict keys and
** messages (torch.nn.functional and torch.nn of the same names):
** linear, conv2d, max_pool2d, adaptive_avg_pool2d, relu, dropout,
** log_softmax/softmax, cross_entropy, mse_loss, and the modules Linear,
** Conv2d, ReLU, Flatten, Dropout, MaxPool2d, AdaptiveAvgPool2d,
** CrossEntropyLoss and MSELoss.
**
** Dims are 0-based here as everywhere in C. Every function returning a
** tensor returns a NEW reference or NULL with ln_error set, and records
** autograd history when an input requires grad. float32 and float64 are
** computed as such; float16/bfloat16 inputs are computed in float32 and the
** result converted back (the conversions are recorded too).
*/
#ifndef LN_LAYERS_H
#define LN_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/tensor.h"
#include "module.h"

/* ---- functional ---- */

/* y = x @ weight^T + bias: x (*, in), weight (out, in), bias (out) or NULL. */
ln_tensor *ln_linear(ln_tensor *x, ln_tensor *weight, ln_tensor *bias);

/* How conv2d pads: explicit amounts, or PyTorch's padding="same" (output
** size = input size; stride must be 1; an odd total goes to the bottom and
** right) and padding="valid" (no padding). */
typedef enum ln_conv_padding { LN_PAD_EXPLICIT, LN_PAD_SAME, LN_PAD_VALID } ln_conv_padding;

typedef struct ln_conv2d_params {
  int64_t stride[2];      /* {1, 1} */
  int64_t padding[2];     /* {0, 0}, zeros on both sides; used with LN_PAD_EXPLICIT */
  int64_t dilation[2];    /* {1, 1} */
  int64_t groups;         /* 1 */
  ln_conv_padding padding_kind;
} ln_conv2d_params;

ln_conv2d_params ln_conv2d_defaults(void);

/* torch.nn.functional.conv2d: x (N, C, H, W) or unbatched (C, H, W),
** weight (OC, C / groups, kh, kw), bias (OC) or NULL; p NULL for the
** defaults. im2col + OpenBLAS gemm per group. x may have any strides; the
** output is channels-last when x or weight is (PyTorch's suggested memory
** format), else contiguous. One node, ConvolutionBackward0, gives the
** gradients of x, weight and bias. */
ln_tensor *ln_conv2d(ln_tensor *x, ln_tensor *weight, ln_tensor *bias,
                     const ln_conv2d_params *p);

typedef struct ln_pool2d_params {
  int64_t kernel[2];
  int64_t stride[2];      /* {0, 0}: the kernel size (PyTorch's stride=None) */
  int64_t padding[2];     /* {0, 0}; implicit -inf padding */
  int64_t dilation[2];    /* {1, 1} */
  bool ceil_mode;         /* false */
} ln_pool2d_params;

/* torch.nn.functional.max_pool2d on (N, C, H, W) or (C, H, W). The output
** keeps x's memory format; NaN propagates. The backward sends each output
** gradient to the position of its maximum (the first one among ties). */
ln_tensor *ln_max_pool2d(ln_tensor *x, const ln_pool2d_params *p);

/* torch.nn.functional.adaptive_avg_pool2d: output (.., oh, ow); a size of
** -1 keeps the input's (PyTorch's None). Output i along a dim averages the
** input range [floor(i * in / out), ceil((i + 1) * in / out)). */
ln_tensor *ln_adaptive_avg_pool2d(ln_tensor *x, const int64_t output_size[2]);

/* max(x, 0). With inplace, x itself is overwritten and returned (a new
** reference to x); x then carries the op's history, as PyTorch's relu_
** (refused for a leaf that requires grad). */
ln_tensor *ln_relu(ln_tensor *x, bool inplace);

/* torch.nn.functional.dropout: when training, zero each element with
** probability p (from lunet's RNG, ln_manual_seed) and scale the others by
** 1 / (1 - p); otherwise x itself. p outside [0, 1] is PyTorch's error
** "dropout probability has to be between 0 and 1, but got 1.5". inplace
** as ln_relu. */
ln_tensor *ln_dropout(ln_tensor *x, double p, bool training, bool inplace);

/* log(softmax(x)) and softmax along dim, computed stably (max subtracted,
** sums in double); dim may be negative. */
ln_tensor *ln_log_softmax(ln_tensor *x, int dim);
ln_tensor *ln_softmax(ln_tensor *x, int dim);

/* ---- losses ---- */

typedef enum ln_reduction { LN_REDUCTION_MEAN, LN_REDUCTION_SUM, LN_REDUCTION_NONE } ln_reduction;

/* "mean", "sum", "none"; else PyTorch's "foo is not a valid value for reduction". */
ln_status ln_reduction_parse(const char *name, ln_reduction *out);
const char *ln_reduction_name(ln_reduction r);

typedef struct ln_cross_entropy_options {
  ln_reduction reduction;   /* mean */
  ln_tensor *weight;        /* (C) rescaling weight per class, or NULL (borrowed) */
  int64_t ignore_index;     /* -100: targets equal to it add nothing */
  int64_t index_base;       /* 0: class c is target c. The Lua layer passes 1 */
} ln_cross_entropy_options;

ln_cross_entropy_options ln_cross_entropy_defaults(void);

/* torch.nn.functional.cross_entropy with class-index targets: input
** (N, C), (C) or (N, C, d1, ...) logits; target int64 (N), () or
** (N, d1, ...) holding class indices counted from o->index_base. Loss per
** element: weight[t] * (logsumexp(x) - x[t]); mean divides the sum by the
** sum of weight[t] over non-ignored elements (NaN when there are none), as
** PyTorch. An index outside the classes fails with "Target 11 is out of
** bounds." (the value as given). One node, whose backward is
** (softmax(x) - onehot(t)) * weight[t] * the reduction's scale. */
ln_tensor *ln_cross_entropy(ln_tensor *input, ln_tensor *target,
                            const ln_cross_entropy_options *o);

/* torch.nn.functional.mse_loss: (input - target)^2, broadcast, reduced. */
ln_tensor *ln_mse_loss(ln_tensor *input, ln_tensor *target, ln_reduction reduction);

/* ---- modules ----
** Module text follows PyTorch's repr with Lua's true/false, and, for
** Flatten, Lua's 1-based dim numbers (Flatten(start_dim=2, end_dim=-1)). */

/* nn.Linear: parameters weight (out, in) and bias (out) (nil without
** bias), PyTorch's init (uniform in +-1/sqrt(in) for both); attributes
** in_features, out_features. */
ln_module *ln_linear_new(int64_t in_features, int64_t out_features, bool bias,
                         ln_dtype dtype, ln_device device);

/* nn.Conv2d: weight (out, in / groups, kh, kw), bias (out); PyTorch's init
** (uniform in +-1/sqrt(fan_in), fan_in = in / groups * kh * kw); attributes
** in_channels, out_channels, groups, padding_mode ("zeros", the only one);
** the other geometry is fixed at construction (ln_conv2d_module_params). */
ln_module *ln_conv2d_new(int64_t in_channels, int64_t out_channels,
                         const int64_t kernel_size[2], const ln_conv2d_params *p,
                         bool bias, ln_dtype dtype, ln_device device);
/* The geometry of a Conv2d module, or NULL for another module (borrowed;
** groups there is the construction's, the attribute is what forward uses). */
const ln_conv2d_params *ln_conv2d_module_params(const ln_module *m, int64_t kernel_size[2]);

/* Linear and Conv2d: draw weight and bias again with PyTorch's init. */
ln_status ln_layer_reset_parameters(ln_module *m);

/* nn.ReLU (attribute inplace) and nn.Flatten (start_dim 1, end_dim -1 in
** C's numbering, PyTorch's defaults). */
ln_module *ln_relu_new(bool inplace);
ln_module *ln_flatten_new(int start_dim, int end_dim);
bool ln_flatten_module_dims(const ln_module *m, int *start_dim, int *end_dim);

/* nn.Dropout: attributes p and inplace, read at each forward; identity in
** eval mode. Fails on p outside [0, 1] as PyTorch. */
ln_module *ln_dropout_new(double p, bool inplace);

/* nn.MaxPool2d: attribute ceil_mode (read at each forward); kernel, stride,
** padding, dilation fixed. `pairs` says which were given as pairs rather
** than one int (bit 0 kernel, 1 stride, 2 padding, 3 dilation), which only
** changes the text: MaxPool2d(kernel_size=2, stride=2, ...) against
** kernel_size=(2, 2). */
enum { LN_POOL_PAIR_KERNEL = 1, LN_POOL_PAIR_STRIDE = 2, LN_POOL_PAIR_PADDING = 4,
       LN_POOL_PAIR_DILATION = 8 };
ln_module *ln_max_pool2d_new(const ln_pool2d_params *p, unsigned pairs);
const ln_pool2d_params *ln_max_pool2d_module_params(const ln_module *m, unsigned *pairs);

/* nn.AdaptiveAvgPool2d; -1 is None; `pair` as for MaxPool2d. */
ln_module *ln_adaptive_avg_pool2d_new(const int64_t output_size[2], bool pair);
bool ln_adaptive_avg_pool2d_module_size(const ln_module *m, int64_t output_size[2],
                                        bool *pair);

/* nn.CrossEntropyLoss (buffer weight, attributes reduction, ignore_index)
** and nn.MSELoss (attribute reduction): forward(input, target). The
** options' weight is retained; index_base is kept for the forward. */
ln_module *ln_cross_entropy_loss_new(const ln_cross_entropy_options *o);
ln_module *ln_mse_loss_new(ln_reduction reduction);

#endif
