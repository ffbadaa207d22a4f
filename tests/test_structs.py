"""Pointers to C structs (nested structs, fixed-size arrays, mixed field types)
as numpy structured arrays, with shadows checked like arrays."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme
from enzyme import BatchDuplicated, Const, Duplicated, Forward, ForwardWithPrimal, Reverse, ReverseWithPrimal, autodiff

PARTICLES = r"""
#include <math.h>
struct vec3 { double v[3]; };
struct particle {
    struct vec3 pos;     /* nested struct holding a fixed-size array */
    double mass;
    int id;              /* integer fields carry no derivative */
    float charge;        /* mixed precision */
    double spring[2][2];
};
/* gravitational-like energy plus a spring term */
double energy(const struct particle *p, int n) {
    double e = 0.0;
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            double r2 = 0.0;
            for (int k = 0; k < 3; k++) {
                double d = p[i].pos.v[k] - p[j].pos.v[k];
                r2 += d * d;
            }
            e -= p[i].mass * p[j].mass / sqrt(r2);
        }
        e += p[i].charge * p[i].spring[0][1] * p[i].pos.v[p[i].id % 3];
    }
    return e;
}
/* step every particle forward in place (an array of structs as output) */
void drift(struct particle *p, int n, double dt) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) p[i].pos.v[k] += dt * p[i].mass * p[i].spring[1][k % 2];
}
"""


@pytest.fixture(scope="module")
def mod(cc):
    return cc(PARTICLES)


def _particles(dtype, n=4, seed=0):
    rng = np.random.default_rng(seed)
    p = np.zeros(n, dtype=dtype)
    p["pos"]["v"] = rng.normal(size=(n, 3)) * 2
    p["mass"] = rng.uniform(0.5, 2.0, size=n)
    p["id"] = np.arange(n) + 7
    p["charge"] = rng.uniform(-1, 1, size=n)
    p["spring"] = rng.normal(size=(n, 2, 2))
    return p


def test_layout_matches_c(mod):
    dtype = mod.energy.dtype("p")
    assert dtype.names == ("pos", "mass", "id", "charge", "spring")
    assert dtype.itemsize == 72
    assert dtype.fields["mass"][1] == 24 and dtype.fields["charge"][1] == 36
    assert mod.energy.signature.params[0].ctype.spelling == "const struct particle *"


def test_struct_gradient_against_finite_differences(mod):
    p = _particles(mod.energy.dtype("p"))
    dp = np.zeros_like(p)
    r = autodiff(ReverseWithPrimal, mod.energy, Duplicated(p, dp), Const(4))
    assert r.primal == pytest.approx(mod.energy(p, 4))
    np.testing.assert_array_equal(dp["id"], 0)  # integer fields ignored
    for field, index in [("mass", (1,)), ("mass", (3,)), ("pos", (2,)), ("spring", (0,))]:
        flat = p[field][index].reshape(-1) if field != "pos" else p["pos"]["v"][index]
        grads = dp[field][index].reshape(-1) if field != "pos" else dp["pos"]["v"][index]
        for k in range(np.size(flat)):
            h = 1e-6
            up, down = p.copy(), p.copy()
            if field == "pos":
                up["pos"]["v"][index][k] += h
                down["pos"]["v"][index][k] -= h
            elif np.ndim(p[field][index]) == 0:
                up[field][index] += h
                down[field][index] -= h
            else:
                up[field][index].reshape(-1)[k] += h
                down[field][index].reshape(-1)[k] -= h
            fd = (mod.energy(up, 4) - mod.energy(down, 4)) / (2 * h)
            assert np.reshape(grads, -1)[k] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_array_of_structs_output_forward_and_reverse_agree(mod):
    dtype = mod.drift.dtype("p")
    p = _particles(dtype, n=3, seed=1)
    tangent = np.zeros_like(p)
    tangent["mass"] = [1.0, 0.0, 0.0]
    before = p.copy()
    autodiff(Forward, mod.drift, Duplicated(p, tangent), Const(3), Const(0.1))
    # d pos_k / d mass_0 = dt * spring[1][k % 2] for particle 0, plus the identity
    np.testing.assert_allclose(tangent["pos"]["v"][0], 0.1 * before["spring"][0, 1, [0, 1, 0]])
    np.testing.assert_array_equal(tangent["pos"]["v"][1:], 0.0)
    p2 = before.copy()
    adjoint = np.zeros_like(p2)
    adjoint["pos"]["v"][0] = [1.0, 1.0, 1.0]
    autodiff(Reverse, mod.drift, Duplicated(p2, adjoint), Const(3), Const(0.1))
    assert adjoint["mass"][0] == pytest.approx(0.1 * before["spring"][0, 1, [0, 1, 0]].sum())


def test_struct_grad_helper(mod):
    p = _particles(mod.energy.dtype("p"), seed=2)
    g = enzyme.grad(mod.energy)(p, 4)
    assert g.dtype == p.dtype
    dp = np.zeros_like(p)
    autodiff(Reverse, mod.energy, Duplicated(p, dp), Const(4))
    assert g.tobytes() == dp.tobytes()


def test_wrong_struct_dtype_is_a_clear_error(mod):
    dtype = mod.energy.dtype("p")
    p = _particles(dtype)
    packed = np.zeros(4, dtype=[("pos", "<f8", (3,)), ("mass", "<f8"), ("id", "<i4"),
                                ("charge", "<f4"), ("spring", "<f8", (2, 2))])
    with pytest.raises(enzyme.ArgumentTypeError, match=r"kernel.dtype\('p'\)"):
        mod.energy(np.zeros(4), 4)
    with pytest.raises(enzyme.ShadowTypeError, match="dtype"):
        autodiff(Reverse, mod.energy, Duplicated(p, packed), Const(4))
    with pytest.raises(enzyme.ShadowValueError, match="shape"):
        autodiff(Reverse, mod.energy, Duplicated(p, np.zeros(3, dtype)), Const(4))
    with pytest.raises(enzyme.ActivityError, match="floating array"):
        enzyme.hessian(mod.energy)(p, 4)


def test_unsupported_structs_fail_on_use(cc):
    mod = cc("""
    struct with_ptr { double *data; int n; };
    struct node { struct node *next; double v; };
    union u { double d; long l; };
    double first(const struct with_ptr *s) { return s->data[0]; }
    double linked(const struct node *s) { return s->v; }
    double as_double(const union u *x) { return x->d; }
    """)
    # a struct holding pointers to scalars is passed as a dict (test_struct_pointers.py)
    assert mod.first({"data": np.array([2.5]), "n": 1}) == 2.5
    with pytest.raises(enzyme.UnsupportedSignatureError, match="only pointers to double"):
        mod.linked(None)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="union"):
        mod.as_double(None)


RETURNS = r"""
#include <math.h>
typedef struct { double x, y; } vec2;
struct summary { vec2 centre; double moments[3]; int count; };
vec2 orbit(double t, double r) { vec2 v = { r * cos(t), r * sin(t) }; return v; }
struct summary summarize(const double *p, int n) {
    struct summary s = {{0.0, 0.0}, {0.0, 0.0, 0.0}, n};
    for (int i = 0; i < n; i++) {
        s.centre.x += p[i] / n;
        s.centre.y += p[i] * p[i] / n;
        s.moments[i % 3] += sin(p[i]);
    }
    return s;
}
"""


def test_struct_returns_in_forward_mode(cc):
    mod = cc(RETURNS)
    value = mod.orbit(0.5, 2.0)
    assert (value["x"], value["y"]) == pytest.approx((2 * np.cos(0.5), 2 * np.sin(0.5)))
    t = autodiff(ForwardWithPrimal, mod.orbit, Duplicated(0.5, 1.0), Duplicated(2.0, 0.5))
    assert t.primal["x"] == pytest.approx(value["x"])
    assert t.tangent["x"] == pytest.approx(-2 * np.sin(0.5) + 0.5 * np.cos(0.5))
    assert t.tangent["y"] == pytest.approx(2 * np.cos(0.5) + 0.5 * np.sin(0.5))
    lanes = autodiff(Forward, mod.orbit, BatchDuplicated(0.5, (1.0, 0.0)),
                     BatchDuplicated(2.0, (0.0, 1.0))).tangent
    assert lanes[1]["x"] == pytest.approx(np.cos(0.5))
    p = np.array([0.1, -0.4, 0.3, 0.9])
    s = mod.summarize(p, 4)
    assert s["count"] == 4 and s["moments"][0] == pytest.approx(np.sin(0.1) + np.sin(0.9))
    direction = np.array([0.0, 0.0, 0.0, 1.0])
    t = autodiff(Forward, mod.summarize, Duplicated(p, direction), Const(4))
    assert t.tangent["centre"]["y"] == pytest.approx(2 * 0.9 / 4)
    assert t.tangent["moments"][0] == pytest.approx(np.cos(0.9))


def test_struct_returns_in_reverse_mode_are_const(cc):
    mod = cc(RETURNS)
    r = autodiff(ReverseWithPrimal, mod.orbit, Const(0.5), Const(2.0))
    assert r.primal["y"] == pytest.approx(2 * np.sin(0.5))
    with pytest.raises(enzyme.ActivityError, match="struct by value"):
        autodiff(Reverse, mod.orbit, Const(0.5), Const(2.0), ret=enzyme.Active)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="by value"):
        cc("typedef struct { double a; } box;\ndouble unbox(box b) { return b.a; }\n").unbox(None)
