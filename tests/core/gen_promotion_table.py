"""Writes testdata/promotion_table.json: jax.numpy.promote_types over every pair of the dtypes
axlearn supports, with 64-bit types enabled. Run: python3 tests/core/gen_promotion_table.py"""
import json
import os

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

DTYPES = ["bool", "uint8", "uint32", "int32", "int64", "float16", "bfloat16", "float32", "float64"]


def main():
    table = {}
    for a in DTYPES:
        for b in DTYPES:
            table[f"{a},{b}"] = str(jnp.promote_types(jnp.dtype(a), jnp.dtype(b)))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "promotion_table.json")
    with open(out, "w") as f:
        json.dump({"jax_version": jax.__version__, "dtypes": DTYPES, "promote_types": table}, f,
                  indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
