"""Structs that hold pointers (issue 11), the most common legacy pattern
(``struct mesh { int n; double k; const double *x; double *y; }``): passed
as a dict of fields, the package builds the C struct, and the shadow struct
from a dict whose pointer fields are the shadow arrays.

Oracles: analytic derivatives, numpy.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import enzyme
from enzyme import Duplicated, Forward, Reverse, ReverseSplit, autodiff

SRC = r"""
struct mesh { int n; double k; const double *x; double *y; };
double mesh_energy(const struct mesh *m) {
    double e = 0;
    for (int i = 0; i + 1 < m->n; i++) { double d = m->x[i + 1] - m->x[i]; e += m->k * d * d; }
    return e;
}
void mesh_update(struct mesh *m) {
    for (int i = 0; i < m->n; i++) m->y[i] = m->k * m->x[i] * m->x[i];
    m->k = 2 * m->k;
}
"""

X = np.array([0.0, 1.0, 3.0, 4.5])


@pytest.fixture(scope="module")
def mod(cc):
    return cc(SRC)


def _mesh(**over):
    fields = {"n": 4, "k": 0.5, "x": X.copy(), "y": np.zeros(4)}
    fields.update(over)
    return fields


def test_primal_builds_the_struct_and_writes_fields_back(mod):
    assert mod.mesh_energy.signature.params[0].ctype.holds_pointers
    assert mod.mesh_energy(_mesh()) == pytest.approx(0.5 * (np.diff(X) ** 2).sum(), rel=1e-15)
    # any object with the fields will do for a const struct
    assert mod.mesh_energy(types.SimpleNamespace(**_mesh(k=2.0))) == pytest.approx(
        2.0 * (np.diff(X) ** 2).sum(), rel=1e-15)
    m = _mesh(k=1.5)
    mod.mesh_update(m)
    np.testing.assert_allclose(m["y"], 1.5 * X ** 2, rtol=1e-15)
    assert m["k"] == 3.0  # the scalar field the C code wrote, copied back


def test_reverse_mode_fills_the_shadow_struct(mod):
    m, dm = _mesh(), {"n": 4, "k": 0.0, "x": np.zeros(4), "y": np.zeros(4)}
    with pytest.warns(enzyme.EnzymeWarning, match="structs holding pointers"):
        res = autodiff(Reverse, mod.mesh_energy, Duplicated(m, dm))
    d = np.diff(X)
    assert dm["k"] == pytest.approx((d ** 2).sum(), rel=1e-14)
    want_dx = np.zeros(4)
    want_dx[:-1] -= 2 * 0.5 * d
    want_dx[1:] += 2 * 0.5 * d
    np.testing.assert_allclose(dm["x"], want_dx, rtol=1e-14)
    assert res.derivs[0] is None  # (the derivatives are in the shadow struct)


def test_forward_mode_and_an_in_place_update(mod):
    m = _mesh()
    tangent = {"n": 4, "k": 1.0, "x": np.zeros(4), "y": np.zeros(4)}
    with pytest.warns(enzyme.EnzymeWarning):
        t = autodiff(Forward, mod.mesh_energy, Duplicated(m, tangent)).tangent
    assert t == pytest.approx((np.diff(X) ** 2).sum(), rel=1e-14)
    # reverse through the update: seed y with ones and k with 1
    m, dm = _mesh(k=0.5), {"n": 4, "k": 1.0, "x": np.zeros(4), "y": np.ones(4)}
    with pytest.warns(enzyme.EnzymeWarning):
        autodiff(Reverse, mod.mesh_update, Duplicated(m, dm))
    np.testing.assert_allclose(dm["x"], 2 * 0.5 * X, rtol=1e-14)  # d(sum y)/dx = 2 k x
    assert dm["k"] == pytest.approx((X ** 2).sum() + 2.0, rel=1e-14)  # sum x^2 + d(2k)/dk


def test_what_is_refused_before_any_call(mod):
    with pytest.raises(enzyme.ArgumentTypeError, match="lacks the field"):
        mod.mesh_energy({"n": 4, "k": 1.0, "x": X})
    with pytest.raises(enzyme.ArgumentTypeError, match="pass a dict of its fields"):
        mod.mesh_energy(X)
    with pytest.raises(enzyme.ArgumentTypeError, match="field 'x'.*float64"):
        mod.mesh_energy(_mesh(x=X.astype(np.float32)))
    with pytest.raises(enzyme.ArgumentValueError, match="field 'n'"):
        mod.mesh_energy(_mesh(n=2 ** 40))
    with pytest.raises(enzyme.ArgumentTypeError, match="mutable mapping"):
        mod.mesh_update(types.MappingProxyType(_mesh()))
    shared = np.zeros(4)
    with pytest.raises(enzyme.ArgumentValueError, match="share memory"):  # y is written, x read
        autodiff(Reverse, mod.mesh_update, Duplicated(
            _mesh(x=shared, y=shared), {"n": 4, "k": 0.0, "x": np.zeros(4), "y": np.zeros(4)}))
    with pytest.raises(enzyme.ShadowValueError, match="shape"):
        autodiff(Reverse, mod.mesh_energy,
                 Duplicated(_mesh(), {"n": 4, "k": 0.0, "x": np.zeros(3), "y": np.zeros(4)}))
    with pytest.raises(enzyme.UnsupportedSignatureError, match="split mode"):
        enzyme.autodiff_thunk(ReverseSplit, mod.mesh_energy, Duplicated)


def test_length_contracts_name_struct_fields(cc):
    """sizes={"m.x": "n"}: field x of the struct m needs n elements, n being
    the struct's own integer field; checked before any C runs."""
    mod = cc(SRC + "\n/* sized */\n",
             sizes={"mesh_energy": {"m.x": "n"}, "mesh_update": {"m.x": "n", "m.y": "n"}})
    assert mod.mesh_energy(_mesh()) == pytest.approx(0.5 * (np.diff(X) ** 2).sum(), rel=1e-15)
    with pytest.raises(enzyme.LengthError,
                       match=r"field 'x' of .* needs at least 6 elements \(n with n=6\), but has 4"):
        mod.mesh_energy(_mesh(n=6))
    y = np.full(3, 7.0)
    with pytest.raises(enzyme.LengthError, match="field 'y'"):
        mod.mesh_update(_mesh(y=y))
    np.testing.assert_array_equal(y, 7.0)  # nothing ran
    with pytest.raises(enzyme.LengthError, match="field 'x'"):  # the shadow struct too
        autodiff(Reverse, mod.mesh_energy,
                 Duplicated(_mesh(), {"n": 4, "k": 0.0, "x": np.zeros(2), "y": np.zeros(4)}))
    with pytest.raises(enzyme.ContractError, match="not a pointer field"):
        cc(SRC + "\n/* bad */\n", sizes={"mesh_energy": {"m.k": "n"}})
    with pytest.raises(enzyme.ContractError, match="not an integer"):
        cc(SRC + "\n/* bad2 */\n", sizes={"mesh_energy": {"m.x": "k"}})


def test_a_length_on_the_struct_itself_says_to_name_its_fields(cc):
    with pytest.raises(enzyme.ContractError, match="give the lengths of its pointer fields"):
        cc(SRC + "\n/* whole */\n", sizes={"mesh_energy": {"m": "4"}})
