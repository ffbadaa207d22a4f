"""compile()'s options checked before anything runs (issue 10): a wrong type
or an unusable value is an OptionError that says how to write it, never a
character-by-character flag list or a raw builtin error."""

from __future__ import annotations

import numpy as np
import pytest

import enzyme

SQ = "double sq(double x) { return x * x; }"


@pytest.mark.parametrize("option, value", [
    ("flags", "-O2"), ("defines", "X"), ("include_dirs", "/tmp"), ("libraries", "m"),
    ("library_dirs", "/usr/lib"), ("enzyme_flags", "-enzyme-loose-types"),
    ("inactive", "logp"), ("inactive_globals", "g"),
])
def test_one_string_where_a_list_belongs(cc, option, value):
    with pytest.raises(enzyme.OptionTypeError, match=rf"write {option}=\['"):
        cc(SQ, **{option: value})


@pytest.mark.parametrize("options", [
    {"flags": ["-DX=1\0"]}, {"defines": {"X": "1\0"}}, {"defines": ["Y\0"]},
    {"include_dirs": ["/tmp\0/x"]}, {"libraries": ["m\0"]},
], ids=["flag", "define-value", "define", "include-dir", "library"])
def test_a_nul_byte_in_an_option(cc, options):
    with pytest.raises(enzyme.OptionError, match="NUL"):
        cc(SQ, **options)


def test_source_text_that_is_not_unicode(cc):
    with pytest.raises(enzyme.OptionError, match="not valid Unicode"):
        cc("double f(double x) { return x; } /* \udcff */")


def test_a_source_file_that_is_not_utf8(cc, tmp_path):
    path = tmp_path / "latin1.c"
    path.write_bytes("/* caf\xe9 */ double f(double x) { return x; }".encode("latin-1"))
    with pytest.raises(enzyme.CompileError, match="not UTF-8"):
        cc(path=path)
    with pytest.raises(enzyme.CompileError, match="not UTF-8"):
        cc(sources=[path])


def test_an_inactive_function_listed_twice(cc):
    mod = cc("""
#include <stdio.h>
void note(double x) { (void)x; }
double f(double x) { note(x); return x * x; }
""", inactive=["note", "note"])
    assert enzyme.grad(mod.f)(3.0) == 6.0


def test_kernels_named_like_module_attributes(cc):
    with pytest.warns(enzyme.EnzymeWarning, match=r"mod\['close'\]"):
        mod = cc("double close(double x) { return 2 * x; } double other(double x) { return x; }",
                 verify=False)
    assert mod["close"](3.0) == 6.0
    assert callable(mod.close) and mod.other(1.0) == 1.0


def test_a_kernel_whose_name_python_owns(cc):
    mod = cc("double __init__(double x) { return x; }", verify=False)
    with pytest.raises(enzyme.UnsupportedSignatureError, match="Rename it"):
        mod["__init__"](2.0)


@pytest.mark.parametrize("chunk", [64, 100, 1000])
def test_a_chunk_larger_than_the_batch_width(cc, chunk):
    mod = cc("void sq(const double *x, double *y, int n) { for (int i = 0; i < n; i++) y[i] = x[i] * x[i]; }")
    x = np.linspace(0.5, 1.5, 70)
    jac = enzyme.jacobian(mod.sq, wrt=0, out=1, chunk=chunk)(x, np.zeros(70), 70)
    np.testing.assert_allclose(jac, np.diag(2 * x), rtol=1e-12)


def test_the_default_options_shortcut_matches_compile():
    """compile(source) with no options skips the option checks: the defaults
    it compares with are compile()'s own, and give what the checks give."""
    import inspect

    from enzyme import module

    params = inspect.signature(enzyme.compile).parameters
    names = [n for n in params if n not in ("source", "path", "sources", "toolchain")]
    assert tuple(params[n].default for n in names) == module._DEFAULT_ARGUMENTS
    for verify in (False, True):
        assert module._default_options[verify] == module.CompileOptions.from_arguments(verify=verify)
