"""Global variables: one copy shared by the primal and every derivative
library, viewable from Python, and Enzyme shadows for active globals."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, autodiff

SOURCE = r"""
#include <math.h>
double stiffness = 3.0;                 /* active state: gets a shadow */
double weights[4] = {1.0, 0.5, 0.25, 0.125};
const double table[2] = {10.0, 20.0};   /* read-only */
int calls;                              /* integer state, no shadow */
struct params { double rate; int order; } model = {0.5, 2};
static double hidden = 1.0;             /* file-static: private to each library */

double energy(const double *x, int n) {
    double e = 0.0;
    calls++;
    for (int i = 0; i < n; i++) e += 0.5 * stiffness * weights[i % 4] * x[i] * x[i];
    return e + model.rate * table[0] * hidden;
}
void set_stiffness(double k) { stiffness = k; }
"""


@pytest.fixture
def mod(cc):
    return cc(SOURCE)


def test_views_and_shared_state(mod):
    assert set(mod.globals) == {"stiffness", "weights", "table", "calls", "model"}
    assert set(mod.shadows) == {"stiffness", "weights", "model"}
    assert float(mod.globals["stiffness"]) == 3.0
    np.testing.assert_array_equal(mod.globals["weights"], [1.0, 0.5, 0.25, 0.125])
    assert mod.globals["model"]["order"] == 2
    mod.set_stiffness(5.0)          # written by C ...
    assert float(mod.globals["stiffness"]) == 5.0   # ... seen from Python
    mod.globals["stiffness"][...] = 2.0              # written from Python ...
    x = np.array([1.0, 2.0])
    # ... seen by a derivative library, which shares the primal library's globals
    r = autodiff(enzyme.ReverseWithPrimal, mod.energy, Duplicated(x, np.zeros(2)), Const(2))
    assert r.primal == pytest.approx(0.5 * 2.0 * (1.0 + 0.5 * 4.0) + 0.5 * 10.0)
    calls_before = int(mod.globals["calls"])
    autodiff(Reverse, mod.energy, Duplicated(x, np.zeros(2)), Const(2))
    mod.energy(x, 2)
    assert int(mod.globals["calls"]) == calls_before + 2   # one counter for all libraries


def test_shadow_of_an_active_global(mod):
    x = np.array([1.0, 2.0, 3.0])
    # globals and their shadows are process-wide state: set them explicitly
    mod.globals["stiffness"][...] = 3.0
    for name in mod.shadows:
        mod.shadows[name][...] = 0
    shadow = mod.shadows["stiffness"]
    autodiff(Reverse, mod.energy, Duplicated(x, np.zeros(3)), Const(3))
    expected = 0.5 * (1.0 * 1 + 0.5 * 4 + 0.25 * 9)   # d energy / d stiffness
    assert float(shadow) == pytest.approx(expected)
    weights_shadow = mod.shadows["weights"]
    np.testing.assert_allclose(weights_shadow[:3], 0.5 * 3.0 * x ** 2)
    assert float(mod.shadows["model"]["rate"]) == pytest.approx(10.0)
    # forward mode: the shadow is the global's tangent
    shadow[...] = 1.0
    weights_shadow[...] = 0.0
    mod.shadows["model"]["rate"] = 0.0
    t = autodiff(Forward, mod.energy, Duplicated(x, np.zeros(3)), Const(3))
    assert t.tangent == pytest.approx(expected)


def test_global_shadow_against_finite_differences(cc):
    mod = cc("""
    #include <math.h>
    double omega = 1.3;
    double phase(double t) { return sin(omega * t) * exp(-0.1 * omega); }
    """)
    mod.shadows["omega"][...] = 0.0
    autodiff(Reverse, mod.phase, Active(0.7))
    h = 1e-6
    values = []
    for delta in (h, -h):
        mod.globals["omega"][...] = 1.3 + delta
        values.append(mod.phase(0.7))
    mod.globals["omega"][...] = 1.3
    assert float(mod.shadows["omega"]) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)


def test_misuse(mod):
    with pytest.raises(ValueError, match="read-only"):
        mod.globals["table"][0] = 1.0          # a Python error, never a write to .rodata
    with pytest.raises(enzyme.GlobalNotFoundError, match="static"):
        mod.globals["hidden"]
    with pytest.raises(KeyError):
        mod.shadows["calls"]                   # integers carry no derivative
