"""Split reverse mode: the augmented forward pass and the reverse pass run in
separate Python calls, the tape held by Python in between."""

from __future__ import annotations

import math

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Reverse, ReverseSplit, ReverseSplitWithPrimal, autodiff, autodiff_thunk

SOURCE = r"""
#include <math.h>
#include <stdlib.h>
/* a loop whose reverse pass needs values cached on the tape */
double chain(const double *x, double a, int n) {
    double *tmp = (double *)malloc(n * sizeof(double));
    double s = 0.0;
    for (int i = 0; i < n; i++) tmp[i] = sin(a * x[i]);
    for (int i = 0; i < n; i++) s += tmp[i] * tmp[(i + 1) % n];
    free(tmp);
    return s;
}
void square_into(const double *x, double *y, int n) {
    for (int i = 0; i < n; i++) y[i] = x[i] * x[i];
}
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SOURCE)


def test_forward_and_reverse_in_separate_calls(mod):
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    fwd, rev = autodiff_thunk(ReverseSplitWithPrimal, mod.chain, Duplicated, Active, Const)
    dx = np.zeros_like(x)
    tape = fwd(x, dx, 0.7, 40)
    assert tape.primal == pytest.approx(mod.chain(x, 0.7, 40), rel=1e-13)
    np.testing.assert_array_equal(dx, 0.0)  # nothing accumulated before the reverse pass
    result = rev(tape, seed=3.0)
    expected_dx = np.zeros_like(x)
    combined = autodiff(Reverse, mod.chain, Duplicated(x, expected_dx), Active(0.7), Const(40),
                        seed=3.0)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-13)
    assert result.derivs[1] == pytest.approx(combined.derivs[1], rel=1e-13)
    assert result.primal == tape.primal


def test_many_tapes_alive_at_once(mod):
    """Tapes are independent: run several forward passes, reverse them later,
    in another order, each with its own seed."""
    fwd, rev = autodiff_thunk(ReverseSplit, mod.chain, Duplicated, Const, Const)
    xs = [np.linspace(0.1, 1.0, 8) * k for k in (1.0, 2.0, 3.0)]
    shadows = [np.zeros(8) for _ in xs]
    tapes = [fwd(x, dx, 1.3, 8) for x, dx in zip(xs, shadows)]
    for k in (2, 0, 1):
        rev(tapes[k], seed=float(k + 1))
    for k, (x, dx) in enumerate(zip(xs, shadows)):
        g = enzyme.grad(mod.chain)(x, 1.3, 8)
        np.testing.assert_allclose(dx, (k + 1) * g, rtol=1e-12)


def test_output_array_seeded_at_reverse_time(mod):
    fwd, rev = autodiff_thunk(ReverseSplit, mod.square_into, Duplicated, Duplicated, Const)
    x, dx = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    y, dy = np.zeros(3), np.zeros(3)
    tape = fwd(x, dx, y, dy, 3)
    np.testing.assert_array_equal(y, x * x)
    dy[:] = [1.0, 10.0, 100.0]  # the seed, chosen after the forward pass
    result = rev(tape)
    assert result.derivs == (None, None, None)
    np.testing.assert_array_equal(dx, 2 * x * np.array([1.0, 10.0, 100.0]))


def test_tape_misuse_is_a_clear_error(mod):
    fwd, rev = autodiff_thunk(ReverseSplit, mod.chain, Duplicated, Active, Const)
    x, dx = np.ones(4), np.zeros(4)
    tape = fwd(x, dx, 0.5, 4)
    rev(tape)
    with pytest.raises(enzyme.ActivityError, match="already reversed"):
        rev(tape)
    other_fwd, other_rev = autodiff_thunk(ReverseSplitWithPrimal, mod.chain, Duplicated, Active,
                                          Const)
    with pytest.raises(enzyme.ActivityError, match="Tape returned by this derivative"):
        other_rev(fwd(x, dx, 0.5, 4))
    with pytest.raises(enzyme.ActivityError, match="Tape"):
        rev("not a tape")
    with pytest.raises(enzyme.ShadowValueError, match="shape"):
        fwd(x, np.zeros(5), 0.5, 4)
    with pytest.raises(enzyme.ActivityError, match="ReverseSplit"):
        autodiff_thunk(Reverse, mod.chain, Duplicated, Active, Const)
    g = enzyme.grad(mod.chain)(x, 0.5, 4)
    dx[:] = 0
    tape = fwd(x, dx, 0.5, 4)
    assert math.isclose(rev(tape, seed=2.0).derivs[1], 2.0 * enzyme.grad(mod.chain, argnums=1)(x, 0.5, 4))
    np.testing.assert_allclose(dx, 2.0 * g, rtol=1e-13)


def test_a_split_mode_in_one_call_is_the_checked_unsplit_derivative(mod, recwarn):
    """autodiff/derivative with a split mode run both passes in one call: the
    same derivative as Reverse / ReverseWithPrimal, first-use check included
    (it used to warn that the derivative could not be checked)."""
    from enzyme import ReverseWithPrimal, derivative

    x, a = np.array([0.3, -0.7, 1.1]), 0.9
    dx_split, dx_plain = np.zeros(3), np.zeros(3)
    split = autodiff(ReverseSplitWithPrimal, mod.chain, Duplicated(x, dx_split), Active(a), Const(3))
    plain = autodiff(ReverseWithPrimal, mod.chain, Duplicated(x, dx_plain), Active(a), Const(3))
    assert split.primal == plain.primal and split.derivs[1] == plain.derivs[1]
    np.testing.assert_array_equal(dx_split, dx_plain)
    df = derivative(mod.chain, ReverseSplit, Duplicated, Active, Const)
    h = 1e-6
    fd = (mod.chain(x, a + h, 3) - mod.chain(x, a - h, 3)) / (2 * h)
    assert df(x, np.zeros(3), a, 3).derivs[1] == pytest.approx(fd, rel=1e-6)
    assert not [w for w in recwarn if issubclass(w.category, enzyme.EnzymeWarning)]
