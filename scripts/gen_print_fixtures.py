#!/usr/bin/env python3
"""Write tests/fixtures/print_cases.txt: PyTorch's repr of small tensors,
the reference for tests/c/test_print.c (which does not need PyTorch).

Each case is
    ### name
    dtype=float32 shape=2,3 values=1,2,...   (or arange=start,step)
    <the repr, one or more lines>
Values are Python float reprs ("nan", "inf" included) or integers; an
arange case has element i = start + i * step computed in float64, then
converted to the dtype, exactly as the C test does. Optional flags:
requires_grad=1, parameter=1.

Usage: python3 scripts/gen_print_fixtures.py [output]   (needs torch)
"""
import math
import os
import sys

import torch

DTYPES = {
    "float32": torch.float32, "float64": torch.float64,
    "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "bool": torch.bool,
}

nan, inf = math.nan, math.inf

# (name, dtype, shape, values or ("arange", start, step), flags)
CASES = [
    ("vector", "float32", [3], [1, 2, 3], {}),
    ("int_matrix", "int64", [2, 2], [1, 2, 3, 4], {}),
    ("scalar", "float32", [], [3.5], {}),
    ("scalar_int_valued", "float32", [], [3.0], {}),
    ("scalar_int64", "int64", [], [7], {}),
    ("scalar_bool", "bool", [], [1], {}),
    ("scalar_nan", "float32", [], [nan], {}),
    ("scalar_small", "float64", [], [1.5e-7], {}),
    ("empty_0x3", "float32", [0, 3], [], {}),
    ("empty_vector", "float32", [0], [], {}),
    ("empty_int64", "int64", [0], [], {}),
    ("empty_bool_3d", "bool", [2, 0, 1], [], {}),
    ("empty_float64", "float64", [0], [], {}),
    ("bool_vector", "bool", [2], [1, 0], {}),
    ("bool_matrix", "bool", [2, 3], [1, 0, 1, 1, 1, 0], {}),
    ("fixed", "float32", [3], [0.1, 0.2, 123.456], {}),
    ("fixed_round", "float32", [2], [0.123456, -2.5], {}),
    ("sci_ratio", "float32", [2], [100000.123, 1.0], {}),
    ("sci_small", "float32", [2], [1e-5, 1.0], {}),
    ("sci_int_big", "float32", [2], [1e9, 1.0], {}),
    ("int_ratio", "float32", [2], [5000.0, 1.0], {}),
    ("nonfinite", "float32", [4], [nan, inf, -inf, 1.5], {}),
    ("nonfinite_int", "float32", [3], [nan, 1.0, 2.0], {}),
    ("nonfinite_sci", "float64", [3], [inf, 1e-8, 1.0], {}),
    ("inf_int", "float32", [2], [inf, 1.0], {}),
    ("sci_negative", "float64", [3], [-1.5e10, 2.0, 3.25], {}),
    ("float32_max", "float32", [2], [3.4e38, -1.0], {}),
    ("tiny_fixed_edge", "float32", [2], [1.5e-4, 0.1], {}),
    ("all_nan", "float32", [2], [nan, nan], {}),
    ("zeros", "float32", [3], [0, 0, 0], {}),
    ("neg_zero", "float32", [2], [-0.0, 1.0], {}),
    ("negatives", "float32", [3], [-1.5, 2.25, -100.125], {}),
    ("float64", "float64", [2], [1, 2], {}),
    ("float16", "float16", [2], [1.5, 2.25], {}),
    ("bfloat16", "bfloat16", [3], [1, 2, 0.5], {}),
    ("int64_big", "int64", [3], [9007199254740993, -5, 0], {}),
    ("int64_neg_width", "int64", [2, 3], [-100, 2, 3, 4, 5, 6], {}),
    ("cube", "float32", [2, 3, 4], ("arange", 0, 1), {}),
    ("hyper", "int64", [2, 2, 2, 2], ("arange", -8, 1), {}),
    ("wrap_floats", "float32", [30], ("arange", -3, 0.5), {}),
    ("wrap_ints", "int64", [100], ("arange", 0, 7), {}),
    ("wrap_matrix", "float64", [3, 20], ("arange", -1, 0.0371), {}),
    ("summary_1d", "float32", [2000], ("arange", 0, 1), {}),
    ("summary_1d_fixed", "float32", [1001], ("arange", -5, 0.01), {}),
    ("summary_2d", "float32", [40, 50], ("arange", -100, 0.37), {}),
    ("summary_3d", "int64", [10, 10, 11], ("arange", 0, 3), {}),
    ("summary_4d_small_dims", "float64", [2, 3, 4, 50], ("arange", 0, 0.25), {}),
    ("summary_sci", "float32", [1200], ("arange", 1e-3, 10.0), {}),
    ("summary_tall", "float32", [1001, 1], ("arange", 0, 1), {}),
    ("summary_dim_of_7", "int64", [150, 7], ("arange", 0, 1), {}),
    ("not_summarized_1000", "int64", [10, 100], ("arange", 0, 1), {}),
    ("bool_summary", "bool", [1100], ("arange", 0, 1), {}),
    ("requires_grad", "float32", [2], [1, 2], {"requires_grad": 1}),
    ("requires_grad_f64", "float64", [2], [1, 2], {"requires_grad": 1}),
    ("suffix_wraps", "float64", [7], ("arange", 100.1234, 1.5), {}),
    ("suffix_wraps_grad", "float16", [2, 7], ("arange", 100.5, 1.25),
     {"requires_grad": 1}),
    ("parameter", "float32", [2], [1, 1], {"parameter": 1}),
    ("scalar_f16_grad", "float16", [], [2.5], {"requires_grad": 1}),
]


def make(dtype, shape, values):
    if isinstance(values, tuple):
        _, start, step = values
        n = math.prod(shape)
        flat = [start + i * step for i in range(n)]
    else:
        flat = values
    if dtype == "int64":
        t = torch.tensor(flat, dtype=torch.int64)
    else:
        t = torch.tensor(flat, dtype=torch.float64).to(DTYPES[dtype])
    return t.reshape(shape)


def spec_values(values):
    if isinstance(values, tuple):
        return "arange=%r,%r" % (float(values[1]), float(values[2]))
    return "values=" + ",".join(
        repr(int(v)) if isinstance(v, int) else repr(float(v)) for v in values)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "tests", "fixtures", "print_cases.txt")
    lines = ["# PyTorch %s reprs, written by scripts/gen_print_fixtures.py"
             % torch.__version__]
    for name, dtype, shape, values, flags in CASES:
        t = make(dtype, shape, values)
        if flags.get("requires_grad"):
            t.requires_grad_(True)
        if flags.get("parameter"):
            t = torch.nn.Parameter(t)
        spec = "dtype=%s shape=%s %s" % (
            dtype, ",".join(map(str, shape)), spec_values(values))
        for k in sorted(flags):
            spec += " %s=%d" % (k, flags[k])
        lines += ["### " + name, spec, repr(t)]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
