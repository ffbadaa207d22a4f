"""The benchmark kernels written in JAX, where the program is natural in JAX.

Each function takes the same NumPy arguments as the C kernel and returns
``(loss, wrt_index, jax_args)``: a JAX function of ``jax_args`` and which of
them the gradient is taken with respect to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc, logsumexp

jax.config.update("jax_enable_x64", True)


def rosenbrock(x, n):
    def f(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    return f, 0, (jnp.asarray(x),)


def lotka_volterra(p, nsteps, dt):
    def f(p):
        def step(state, _):
            x, y = state
            dx = p[0] * x - p[1] * x * y
            dy = p[2] * x * y - p[3] * y
            return (x + dt * dx, y + dt * dy), None
        (x, y), _ = jax.lax.scan(step, (10.0, 5.0), None, length=nsteps)
        return (x - 8.0) ** 2 + (y - 6.0) ** 2
    return f, 0, (jnp.asarray(p),)


def gmm(theta, x, n, d, k):
    xs = jnp.asarray(x).reshape(n, d)

    def f(theta):
        alpha, mu, ls = theta[:k], theta[k:k + k * d].reshape(k, d), theta[k + k * d:].reshape(k, d)
        z = (xs[:, None, :] - mu[None]) * jnp.exp(-ls)[None]
        terms = alpha[None] - jnp.sum(0.5 * z * z + ls[None], axis=2)
        log_norm = logsumexp(alpha) + 0.5 * d * jnp.log(2.0 * jnp.pi)
        return jnp.sum(logsumexp(terms, axis=1) - log_norm)
    return f, 0, (jnp.asarray(theta),)


def heat(u0, m, nsteps, nu):
    def f(u0):
        def step(_, a):
            p = jnp.pad(a, 1)
            return a + nu * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * a)
        a = jax.lax.fori_loop(0, nsteps, step, u0.reshape(m, m))
        return jnp.sum(a * a)
    return f, 0, (jnp.asarray(u0),)


def mlp(theta, x, y, batch, n_in, hidden):
    xs, ys = jnp.asarray(x).reshape(batch, n_in), jnp.asarray(y)

    def f(theta):
        w1 = theta[:n_in * hidden].reshape(n_in, hidden)
        b1 = theta[n_in * hidden:n_in * hidden + hidden]
        w2 = theta[n_in * hidden + hidden:n_in * hidden + 2 * hidden]
        b2 = theta[-1]
        out = jnp.tanh(xs @ w1 + b1) @ w2 + b2
        return jnp.mean((out - ys) ** 2)
    return f, 0, (jnp.asarray(theta),)


def black_scholes(spot, vol, strike, expiry, rate, n):
    k, t = jnp.asarray(strike), jnp.asarray(expiry)

    def f(spot, vol):
        sq = vol * jnp.sqrt(t)
        d1 = (jnp.log(spot / k) + (rate + 0.5 * vol * vol) * t) / sq
        d2 = d1 - sq
        n1, n2 = 0.5 * erfc(-d1 / jnp.sqrt(2.0)), 0.5 * erfc(-d2 / jnp.sqrt(2.0))
        return jnp.sum(spot * n1 - k * jnp.exp(-rate * t) * n2)
    return f, (0, 1), (jnp.asarray(spot), jnp.asarray(vol))


def lennard_jones(pos, n):
    def f(pos):
        p = pos.reshape(n, 3)
        diff = p[:, None, :] - p[None, :, :]
        r2 = jnp.sum(diff * diff, axis=2) + jnp.eye(n)  # the diagonal is masked below
        s6 = 1.0 / r2 ** 3
        e = 4.0 * (s6 * s6 - s6)
        return 0.5 * jnp.sum(jnp.where(jnp.eye(n, dtype=bool), 0.0, e))
    return f, 0, (jnp.asarray(pos),)


JAX_KERNELS = {
    "rosenbrock_10": rosenbrock, "rosenbrock_1e6": rosenbrock, "lotka_volterra": lotka_volterra,
    "gmm": gmm, "heat": heat, "mlp": mlp, "mlp_blas": mlp, "black_scholes": black_scholes,
    "lennard_jones": lennard_jones,
}
