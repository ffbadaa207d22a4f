"""The README's quick start, run against an installed wheel (ci/wheel.sh).

Checks the numbers against the analytic derivatives, and that the package
imported is the installed one, not a source tree.
"""

import sys
import sysconfig
from pathlib import Path

import numpy as np

import enzyme
from enzyme import Active, Const, Duplicated, Forward, Reverse, ReverseWithPrimal

site = Path(sysconfig.get_paths()["purelib"]).resolve()
installed = Path(enzyme.__file__).resolve()
assert installed.is_relative_to(site), f"imported {installed}, not the wheel installed in {site}"

mod = enzyme.compile("""
double f(double x, double y) { return x * x + 3 * y; }

double loss(const double *w, const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (w[i] * x[i] - 1.0) * (w[i] * x[i] - 1.0);
    return s;
}
""")
assert mod.f(3.0, 5.0) == 24.0
assert enzyme.autodiff(Reverse, mod.f, Active(3.0), Active(5.0)).derivs == (6.0, 3.0)
assert enzyme.autodiff(Forward, mod.f, Duplicated(3.0, 1.0), Const(5.0)).tangent == 6.0

w, x = np.ones(4), np.arange(4.0)
dw = np.zeros_like(w)
r = enzyme.autodiff(ReverseWithPrimal, mod.loss, Duplicated(w, dw), Const(x), Const(4))
assert np.allclose(dw, 2 * (w * x - 1) * x) and r.primal == mod.loss(w, x, 4)
value, g = enzyme.value_and_grad(mod.loss)(w, x, 4)
assert np.allclose(g, dw) and value == r.primal

# The compiled parts of the wheel are the ones in use.
assert enzyme.call._fastcall is not None, "the C fast path did not load from the wheel"
tc = enzyme.toolchain.resolve()
assert tc.split_pass, f"the wheel's long-block pass is not in use: {tc.split_pass_problem}"
assert Path(tc.split_pass).resolve().is_relative_to(installed.parent), tc.split_pass
print(f"quick start OK on Python {sys.version.split()[0]}; long-block pass: {tc.split_pass}")
