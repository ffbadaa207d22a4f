"""Independent oracles for the behaviour tests."""

from __future__ import annotations

import numpy as np


def central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Gradient of scalar f at array x by central differences (the oracle)."""
    x = np.asarray(x, dtype=float)
    grad = np.empty_like(x)
    for i in range(x.size):
        step = h * max(1.0, abs(x.flat[i]))
        up, down = x.copy(), x.copy()
        up.flat[i] += step
        down.flat[i] -= step
        grad.flat[i] = (f(up) - f(down)) / (2 * step)
    return grad
