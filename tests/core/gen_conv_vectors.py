#!/usr/bin/env python3
"""Writes tests/core/testdata/conv_vectors.json: jax.lax.conv_general_dilated outputs, first-order
gradients and one second-order gradient per case, for tests/core/conv_test.cc.

Run with the python3 that has jax:  python3 tests/core/gen_conv_vectors.py
Inputs are closed-form so the test rebuilds them:  lhs[i] = sin(0.37 i + 0.1),
rhs[i] = 0.5 cos(0.51 i - 0.2), cotangent[i] = cos(0.23 i)  (i = row-major flat index).
All in float64.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

jax.config.update("jax_enable_x64", True)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "conv_vectors.json")

CASES = [
    # name, lhs shape, rhs shape, strides, padding, lhs_dil, rhs_dil, (lhs, rhs, out) specs, fgc, bgc
    ("nhwc_same_strided_dilated_grouped", (2, 5, 6, 4), (3, 3, 2, 6), (2, 1), "SAME", (1, 1),
     (1, 2), ("NHWC", "HWIO", "NHWC"), 2, 1),
    ("nwc_valid_stride3", (1, 9, 3), (4, 3, 2), (3,), "VALID", (1,), (1,),
     ("NWC", "WIO", "NWC"), 1, 1),
    ("nchw_negative_pad_lhs_dilated", (1, 2, 5, 5), (4, 1, 2, 3), (1, 2), [(1, -1), (2, 0)],
     (2, 1), (1, 2), ("NCHW", "OIHW", "NCHW"), 2, 1),
    ("ndhwc_depthwise_same", (1, 4, 3, 5, 2), (2, 2, 2, 1, 4), (1, 2, 2), "SAME", (1, 1, 1),
     (1, 1, 1), ("NDHWC", "DHWIO", "NDHWC"), 2, 1),
    ("nchw_batch_groups", (4, 3, 4, 4), (4, 3, 2, 2), (1, 1), [(0, 1), (1, 0)], (1, 1), (1, 1),
     ("NCHW", "OIHW", "NCHW"), 1, 2),
    ("mixed_layouts", (2, 3, 5, 4), (2, 3, 3, 4), (2, 1), [(1, 1), (0, 2)], (1, 1), (2, 1),
     ("NCHW", "HWIO", "NHWC"), 1, 1),
]


def main():
    cases = []
    for name, ls, rs, strides, padding, ldil, rdil, specs, fgc, bgc in CASES:
        x = np.sin(0.37 * np.arange(np.prod(ls)) + 0.1).reshape(ls)
        w = 0.5 * np.cos(0.51 * np.arange(np.prod(rs)) - 0.2).reshape(rs)

        def f(x, w):
            return lax.conv_general_dilated(x, w, strides, padding, ldil, rdil, specs,
                                            feature_group_count=fgc, batch_group_count=bgc)

        y = f(x, w)
        ct = np.cos(0.23 * np.arange(y.size)).reshape(y.shape)
        loss = lambda x, w: jnp.sum(f(x, w) * ct)
        gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
        # Second order: d/dw of sum(dL/dx ** 2).
        ggw = jax.grad(lambda x, w: jnp.sum(jax.grad(loss, argnums=0)(x, w) ** 2), argnums=1)(x, w)
        explicit = padding if isinstance(padding, str) else [list(p) for p in padding]
        cases.append({
            "name": name, "lhs_shape": list(ls), "rhs_shape": list(rs), "strides": list(strides),
            "padding": explicit, "lhs_dilation": list(ldil), "rhs_dilation": list(rdil),
            "specs": list(specs), "feature_group_count": fgc, "batch_group_count": bgc,
            "out_shape": list(y.shape),
            "out": np.asarray(y).reshape(-1).tolist(),
            "grad_lhs": np.asarray(gx).reshape(-1).tolist(),
            "grad_rhs": np.asarray(gw).reshape(-1).tolist(),
            "grad2_rhs": np.asarray(ggw).reshape(-1).tolist(),
        })
    with open(OUT, "w") as fh:
        json.dump({"jax_version": jax.__version__, "cases": cases}, fh, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
