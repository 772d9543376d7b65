#!/usr/bin/python3
"""gen_npy_fixtures.py - writes the tiny .npy fixtures that tests/test_data.c checks kiln's NPY
reader against (files written by NumPy itself, so the test needs no Python).

Run once from the repository root: /usr/bin/python3 tools/gen_npy_fixtures.py
Output: tests/data/npy/*.npy (a few KB in all). The values follow formulas that test_data.c
recomputes: base(n) = [(i % 7) - 3 for i in range(n)] scaled per dtype, see below.
"""
import os

import numpy as np
from numpy.lib import format as npf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "npy")


def base(shape):
    n = int(np.prod(shape)) if len(shape) else 1
    return (np.arange(n) % 7 - 3).reshape(shape)


def save(name, arr, version=None):
    path = os.path.join(OUT, name + ".npy")
    with open(path, "wb") as f:
        if version is None:
            np.save(f, arr, allow_pickle=False)
        else:
            npf.write_array(f, arr, version=version, allow_pickle=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    # C order, one per dtype; floats are base * 0.5
    save("f4", (base((2, 3)) * 0.5).astype("<f4"))
    save("f8", (base((2, 3)) * 0.5).astype("<f8"))
    save("f2", (base((2, 3)) * 0.5).astype("<f2"))
    save("i1", base((2, 3)).astype("<i1"))
    save("u1", (base((2, 3)) + 3).astype("|u1"))          # 0..6
    save("i4", (base((2, 3)) * 1000).astype("<i4"))
    save("i8", (base((2, 3)) * 10**12).astype("<i8"))
    save("b1", (base((2, 3)) > 0))                         # bool
    save("i2", (base((2, 3)) * 100).astype("<i2"))         # widened to i32
    save("u2", (base((2, 3)) + 3).astype("<u2") * 10000)   # widened to i32
    # big endian
    save("be_f4", (base((2, 3)) * 0.5).astype(">f4"))
    save("be_i8", (base((2, 3)) * 10**12).astype(">i8"))
    save("be_f8", (base((2, 3)) * 0.5).astype(">f8"))
    # Fortran order: a (2, 3, 4) array whose C-order values are base
    save("fortran_f4", np.asfortranarray((base((2, 3, 4)) * 0.5).astype("<f4")))
    save("fortran_i4", np.asfortranarray(base((3, 5)).astype("<i4")))
    # shapes: 0-d scalar, (5,), empty
    save("scalar_f8", np.array(2.5, dtype="<f8"))
    save("vec5_i4", base((5,)).astype("<i4"))
    save("empty_f4", np.zeros((0, 3), dtype="<f4"))
    # format versions 2.0 and 3.0
    save("v2_f4", (base((2, 3)) * 0.5).astype("<f4"), version=(2, 0))
    save("v3_f4", (base((2, 3)) * 0.5).astype("<f4"), version=(3, 0))
    # an object array (pickled): kiln must refuse it
    with open(os.path.join(OUT, "object.npy"), "wb") as f:
        np.save(f, np.array([1, "a", None], dtype=object), allow_pickle=True)


if __name__ == "__main__":
    main()
