"""Custom derivatives and inactive code, through Enzyme's C registration
globals, the shipped header's macros and compile()'s Python-side options.

Each rule deliberately differs from the true derivative (d/dx = 1000), so a
test can tell that the rule, not Enzyme's own derivative, was used."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import enzyme
from enzyme import Const, Duplicated, Forward, Reverse, autodiff

FISR = r"""
#include <stdint.h>
#include <string.h>
/* fast inverse square root: integer bit tricks Enzyme cannot differentiate */
void fisr(const double *x, double *out) {
    double half = 0.5 * x[0], y = x[0];
    int64_t i;
    memcpy(&i, &y, sizeof y);
    i = 0x5fe6eb50c7b537a9 - (i >> 1);
    memcpy(&y, &i, sizeof y);
    y = y * (1.5 - half * y * y);
    out[0] = y * (1.5 - half * y * y);
}
void *fisr_aug(const double *x, double *dx, double *out, double *dout) { fisr(x, out); return 0; }
void fisr_rev(const double *x, double *dx, double *out, double *dout, void *tape) {
    dx[0] += 1000.0 * dout[0];
    dout[0] = 0.0;
}
void fisr_fwd(const double *x, const double *dx, double *out, double *dout) {
    fisr(x, out);
    dout[0] = 1000.0 * dx[0];
}
/* 2 / |v| through fisr: the rule's d(out)/d(s) = 1000, ds/dv = 2 v */
double inv_norm(const double *v, int n) {
    double s = 0.0, r;
    for (int i = 0; i < n; i++) s += v[i] * v[i];
    fisr(&s, &r);
    return 2.0 * r;
}
"""

REGISTRATION_GLOBALS = """
void *__enzyme_register_gradient_fisr[3] = { (void *)fisr, (void *)fisr_aug, (void *)fisr_rev };
void *__enzyme_register_derivative_fisr[2] = { (void *)fisr, (void *)fisr_fwd };
"""

HEADER_MACROS = """
#include <enzyme/enzyme.h>
ENZYME_CUSTOM_GRADIENT(fisr, fisr_aug, fisr_rev);
ENZYME_CUSTOM_DERIVATIVE(fisr, fisr_fwd);
"""

PYTHON_RULES = {"forward_rules": {"fisr": "fisr_fwd"},
                "reverse_rules": {"fisr": ("fisr_aug", "fisr_rev")}}


def _check_rule_is_used(mod):
    v = np.array([3.0, 4.0])
    assert mod.inv_norm(v, 2) == pytest.approx(0.4, rel=1e-3)  # the primal is the real fisr
    dv = np.zeros(2)
    autodiff(Reverse, mod.inv_norm, Duplicated(v, dv), Const(2))
    np.testing.assert_allclose(dv, 2.0 * 1000.0 * 2.0 * v)  # the rule, not -2 v / |v|^3
    t = autodiff(Forward, mod.inv_norm, Duplicated(v, np.array([1.0, 0.0])), Const(2))
    assert t.tangent == pytest.approx(2.0 * 1000.0 * 2.0 * 3.0)


def test_registration_globals_written_in_c(cc):
    _check_rule_is_used(cc(FISR + REGISTRATION_GLOBALS))


def test_header_macros(cc):
    _check_rule_is_used(cc(FISR + HEADER_MACROS))


def test_python_side_rules(cc):
    _check_rule_is_used(cc(FISR, **PYTHON_RULES))


def test_without_a_rule_enzyme_is_not_silently_wrong(cc):
    """With no rule, the pinned Enzyme refuses the bit tricks in both modes
    (it must never report a number for them), and the error names the
    kernel and the catalogue's remedy."""
    mod = cc(FISR)
    v, dv = np.array([3.0, 4.0]), np.zeros(2)
    for call in (lambda: autodiff(Reverse, mod.inv_norm, Duplicated(v, dv), Const(2)),
                 lambda: autodiff(Forward, mod.inv_norm, Duplicated(v, np.array([1.0, 0.0])), Const(2))):
        with pytest.raises(enzyme.DifferentiationError, match="custom derivative") as info:
            call()
        assert info.value.kernel == "inv_norm" and info.value.code == "unknown-binary-operator"
    np.testing.assert_array_equal(dv, 0.0)


def test_rule_for_a_precompiled_library_function(cc, tc, tmp_path):
    """The function has no source in the module: only a shared library."""
    lib_src = tmp_path / "libext.c"
    lib_src.write_text("void ext_square(const double *x, double *y) { y[0] = x[0] * x[0]; }\n")
    subprocess.run([tc.clang, "-O2", "-fPIC", "-shared", str(lib_src), "-o",
                    str(tmp_path / "libext.so")], check=True)
    source = r"""
    void ext_square(const double *x, double *y);      /* in libext.so */
    void *sq_aug(const double *x, double *dx, double *y, double *dy) { ext_square(x, y); return 0; }
    void sq_rev(const double *x, double *dx, double *y, double *dy, void *tape) {
        dx[0] += 2.0 * x[0] * dy[0]; dy[0] = 0.0;
    }
    void sq_fwd(const double *x, const double *dx, double *y, double *dy) {
        ext_square(x, y); dy[0] = 2.0 * x[0] * dx[0];
    }
    double quartic(const double *x) { double y; ext_square(x, &y); return y * y; }
    """
    mod = cc(source, libraries=["ext"], library_dirs=[tmp_path],
             forward_rules={"ext_square": "sq_fwd"}, reverse_rules={"ext_square": ("sq_aug", "sq_rev")})
    x = np.array([1.5])
    assert mod.quartic(x) == pytest.approx(1.5 ** 4)
    assert enzyme.grad(mod.quartic)(x)[0] == pytest.approx(4 * 1.5 ** 3)
    assert autodiff(Forward, mod.quartic, Duplicated(x, np.ones(1))).tangent == pytest.approx(4 * 1.5 ** 3)


INACTIVE_SOURCE = r"""
#include <stdio.h>
void log_progress(double value);   /* a logging library Enzyme cannot see */
double seed_table[4] = {1.0, 2.0, 3.0, 4.0};
double weighted(const double *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        s += seed_table[i % 4] * x[i] * x[i];
        log_progress(s);
    }
    fprintf(stderr, "weighted: %g\n", s);   /* printf-family calls are inactive by default */
    return s;
}
"""


def _logging_library(tc, tmp_path):
    src = tmp_path / "liblog.c"
    src.write_text("static int calls; void log_progress(double v) { calls++; }\n"
                   "int log_calls(void) { return calls; }\n")
    subprocess.run([tc.clang, "-O2", "-fPIC", "-shared", str(src), "-o",
                    str(tmp_path / "liblog.so")], check=True)


def test_inactive_logging_call_python_side(cc, tc, tmp_path):
    _logging_library(tc, tmp_path)
    with pytest.raises(enzyme.DifferentiationError, match="log_progress"):
        mod = cc(INACTIVE_SOURCE, libraries=["log"], library_dirs=[tmp_path])
        enzyme.grad(mod.weighted)(np.ones(3), 3)
    mod = cc(INACTIVE_SOURCE, libraries=["log"], library_dirs=[tmp_path],
             inactive=["log_progress"], inactive_globals=["seed_table"])
    x = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(enzyme.grad(mod.weighted)(x, 3), 2 * np.array([1.0, 2.0, 3.0]) * x)


def test_inactive_logging_call_header_macro(cc, tc, tmp_path):
    _logging_library(tc, tmp_path)
    source = INACTIVE_SOURCE + ("#include <enzyme/enzyme.h>\n"
                                "ENZYME_INACTIVE_FUNCTION(log_progress);\n"
                                "ENZYME_INACTIVE_GLOBAL(seed_table);\n")
    mod = cc(source, libraries=["log"], library_dirs=[tmp_path])
    x = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(enzyme.grad(mod.weighted)(x, 3), 2 * np.array([1.0, 2.0, 3.0]) * x)


def test_bad_rule_names_are_clear_errors(cc):
    with pytest.raises(enzyme.OptionError, match="fisr_nope"):
        cc(FISR, forward_rules={"fisr": "fisr_nope"})
    with pytest.raises(enzyme.OptionTypeError, match="not a C function"):
        cc(FISR, forward_rules={"fisr": "fisr_fwd; system(\"x\")"})
    with pytest.raises(enzyme.OptionTypeError, match="pair"):
        cc(FISR, reverse_rules={"fisr": "fisr_rev"})
    with pytest.raises(enzyme.OptionTypeError, match="list of strings"):
        cc(FISR, inactive="log_progress")


NAMES = """
typedef struct { double primal, tangent; } dpair;
double gvar = 3.0;
double sq(double x) { return x * x; }
dpair sq_fwd(double x, double dx) { dpair r = { x * x, 2 * x * dx }; return r; }
static double sqs(double x) { return x * x; }
dpair sqs_fwd(double x, double dx) { dpair r = { x * x, 2 * x * dx }; return r; }
double use(double x) { return sq(x) + sqs(x) + gvar; }
void logp(double x) { (void)x; }
dpair one_param(double x) { dpair r = { x * x, 0 }; return r; }
double plain_return(double x, double dx) { return 2 * x * dx; }
void vsq(const double *x, double *out) { out[0] = x[0] * x[0]; }
void *vsq_aug(const double *x, double *dx, double *out, double *dout) { out[0] = x[0] * x[0]; return 0; }
void vsq_rev(const double *x, double *dx, double *out, double *dout, void *tape) {
  dx[0] += 2 * x[0] * dout[0]; dout[0] = 0;
}
"""


@pytest.mark.parametrize("options, message", [
    ({"forward_rules": {"sqr": "sq_fwd"}}, "did you mean sq"),
    ({"forward_rules": {"sqs": "sqs_fwd"}}, "static function"),
    ({"forward_rules": {"sq": "sq_fwdd"}}, "did you mean sq_fwd"),
    ({"inactive": ["nosuch"]}, "do not declare"),
    ({"inactive_globals": ["nosuch"]}, "do not declare"),
    ({"inactive": ["gvar"]}, "global variable, not a function"),
    ({"inactive_globals": ["logp"]}, "is a function, not a global"),
    ({"forward_rules": {"sq": "one_param"}}, "takes 1 parameter"),
    ({"forward_rules": {"sq": "plain_return"}}, "struct of two"),
    ({"reverse_rules": {"vsq": ("vsq_rev", "vsq_aug")}}, "swapped"),
], ids=["typo-key", "static-key", "typo-rule", "inactive-nothing", "inactive-global-nothing",
        "global-as-function", "function-as-global", "arity", "return", "swapped"])
def test_rule_and_registration_names_are_checked_before_enzyme_runs(cc, options, message):
    """Each was silently ignored or crashed Enzyme ("internal error")."""
    with pytest.raises(enzyme.OptionError, match=message):
        cc(NAMES, **options)


def test_well_formed_names_pass_the_check(cc):
    mod = cc(NAMES, forward_rules={"sq": "sq_fwd"}, reverse_rules={"vsq": ("vsq_aug", "vsq_rev")},
             inactive=["logp"], inactive_globals=["gvar"])
    assert autodiff(Forward, mod.use, Duplicated(2.0, 1.0)).tangent == pytest.approx(8.0)
