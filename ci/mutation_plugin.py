"""A pytest plugin that perturbs the C enzyme-ffi generates around Enzyme's
calls, so that ci/mutation_check.py can count which tests notice.

``ENZYME_MUTATION`` names the mutation (see MUTATIONS); the generated
wrappers are rewritten as text before they are compiled. This is test
tooling only: the package never reads the variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from enzyme import api, codegen


def _scale_seed(source: str) -> str:
    """Reverse mode: every return seed doubled (all adjoints x2), in both
    generated forms (seeded return value, seeded return shadow)."""
    source = re.sub(r"\breturn seed \* ", "return 2.0 * seed * ", source)
    return re.sub(r"\bdr_(\d+) = seed_\1\b", r"dr_\1 = 2.0 * seed_\1", source)


def _drop_seed(source: str) -> str:
    """Reverse mode: the return seed ignored (taken as 1, or 0 for lane 0 of
    the seeded-shadow form)."""
    source = re.sub(r"\breturn seed \* ", "return ", source)
    return re.sub(r"\bdr_0 = seed_0\b", "dr_0 = 0", source)


def _active_2v_plus_1(source: str) -> str:
    """Reverse mode: every Active scalar's adjoint reported as 2 v + 1."""
    return re.sub(r"(\*out_d(a\d+)_(\d+)) = (s\2_\3);", r"\1 = 2.0 * \4 + 1.0;", source)


def _scale_tangents(source: str) -> str:
    """Forward mode: every returned tangent doubled."""
    return re.sub(r"(\*?\(?[^;]*out_tangent_(\d+)\)?) = (dr_\2);", r"\1 = 2.0 * \3;", source)


def _swap_shadows(source: str) -> str:
    """The shadows of the first two pointer arguments of one C type swapped
    in the Enzyme call (the derivative of one lands in the other)."""
    decls = dict((name, ctype.strip()) for ctype, name in
                 re.findall(r"([\w\s]+\*)\s*(da\d+_0)\b", source))
    call = next((line for line in source.splitlines() if "__enzyme_" in line and "(" in line
                 and not line.lstrip().startswith("extern")), None)
    if call is None:
        return source
    names = []
    for name in re.findall(r"\b(da\d+_0)\b", call):
        if name not in names:
            names.append(name)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if decls.get(first) == decls.get(second):
                swapped = re.sub(rf"\b{first}\b", "__efi_tmp__", call)
                swapped = re.sub(rf"\b{second}\b", first, swapped).replace("__efi_tmp__", second)
                return source.replace(call, swapped)
    return source


MUTATIONS = {
    "scale-seed": _scale_seed,
    "drop-seed": _drop_seed,
    "active-2v+1": _active_2v_plus_1,
    "scale-tangents": _scale_tangents,
    "swap-shadows": _swap_shadows,
}


def _wrap(generate, mutate):
    def mutated(*args, **kwargs):
        wrapper = generate(*args, **kwargs)
        return replace(wrapper, c_source=mutate(wrapper.c_source))
    return mutated


def pytest_configure(config):
    name = os.environ.get("ENZYME_MUTATION", "")
    if not name:
        return
    mutate = MUTATIONS[name]
    for attr in ("generate_derivative", "generate_hvp", "generate_split"):
        mutated = _wrap(getattr(codegen, attr), mutate)
        for module in (codegen, api):
            if hasattr(module, attr):
                setattr(module, attr, mutated)
