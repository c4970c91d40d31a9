/*
** print.h -- text form of a tensor in PyTorch's format:
**   tensor([[1., 2.],
**           [3., 4.]], dtype=torch.float64)
** summarised with "..." past 1000 elements (3 items at each edge).
*/
#ifndef LN_PRINT_H
#define LN_PRINT_H

#include "tensor.h"

/* A malloc'd string (caller frees), or NULL with a message. */
char *ln_tensor_to_string(ln_tensor *t);

#endif
