"""Ported from enzyme/test/Integration/ReverseMode (part a)."""

from __future__ import annotations

import numpy as np
from harness import Case, assert_fd

from enzyme import Active, Const, Duplicated, Reverse, autodiff

MANYMAX = r"""
#include <enzyme/enzyme.h>

/* a running maximum that starts at a scalar */
double alldiv(double *a, int N, double start) {
    for (int i = 0; i < N; i++)
        if (a[i] > start) start = a[i];
    return start;
}

double alldiv2(double *a, int N) {
    double start = 0.0;
    for (int i = 0; i < N; i++)
        if (a[i] > start) start = a[i];
    return start;
}

static void fill(double *a, double *d_a, int big_at) {
    for (int i = 0; i < 5; i++) { a[i] = i + 1; d_a[i] = 0.0; }
    if (big_at >= 0) a[big_at] = 102.0;
}

void conformance_c_side(double *out) {
    double a[5], d_a[5];
    fill(a, d_a, 3);
    out[5] = __enzyme_autodiff((void *)alldiv, a, d_a, 5, 3.14);
    for (int i = 0; i < 5; i++) out[i] = d_a[i];
    fill(a, d_a, 4);
    __enzyme_autodiff((void *)alldiv2, a, d_a, 5);
    for (int i = 0; i < 5; i++) out[6 + i] = d_a[i];
    fill(a, d_a, -1);
    out[16] = __enzyme_autodiff((void *)alldiv, a, d_a, 5, 102.0);
    for (int i = 0; i < 5; i++) out[11 + i] = d_a[i];
}
"""


def _manymax_api(mod):
    values = []
    for big_at, start in ((3, 3.14), (4, None), (None, 102.0)):
        a = np.arange(1.0, 6.0)
        if big_at is not None:
            a[big_at] = 102.0
        da = np.zeros(5)
        if start is None:
            autodiff(Reverse, mod.alldiv2, Duplicated(a, da), Const(5))
            assert_fd(lambda v: mod.alldiv2(v, 5), a, da)
            values += list(da)
        else:
            r = autodiff(Reverse, mod.alldiv, Duplicated(a, da), Const(5), Active(start))
            assert_fd(lambda v, s=start: mod.alldiv(v, 5, s), a, da)
            values += list(da) + ([r.derivs[2]] if big_at == 3 else [])
            last = r.derivs[2]
    return values + [last]


CASES = [
    Case(name="reverse/manymax", upstream="enzyme/test/Integration/ReverseMode/manymax.c",
         source=MANYMAX,
         expected=(0, 0, 0, 1, 0, 0,   # alldiv, max at a[3]; d start
                   0, 0, 0, 0, 1,      # alldiv2, max at a[4]
                   0, 0, 0, 0, 0, 1),  # alldiv with start = 102; d start
         api=_manymax_api),
]
