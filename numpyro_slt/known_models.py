"""Models whose learning coefficient is known in closed form, with data generators.

They are the ground truth of the LLC estimator (see :mod:`numpyro_slt.theory` for the formulas,
``tests/test_llc_known_answers.py`` for the checks and ``examples/llc_linear_models.py`` for a
tour). The reduced-rank and crossing generators remove from the noise its projection on the inputs,
so the true parameter is an exact minimizer of L_n and λ̂(w*) carries no bias from a non-zero
gradient at w*; for the linear model, :func:`least_squares` gives that minimizer.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

__all__ = [
    "crossing_model",
    "least_squares",
    "linear_model",
    "logistic_mle",
    "logistic_model",
    "make_crossing_data",
    "make_linear_data",
    "make_logistic_data",
    "make_rrr_data",
    "orthogonalize_noise",
    "rrr_model",
]


def orthogonalize_noise(x: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``noise`` minus its least-squares projection on the columns of ``x``."""
    return noise - x @ np.linalg.lstsq(x, noise, rcond=None)[0]


def least_squares(x, y) -> jnp.ndarray:
    """The least-squares (maximum-likelihood) weights of a linear regression."""
    return jnp.asarray(np.linalg.lstsq(np.asarray(x), np.asarray(y), rcond=None)[0])


def make_linear_data(n: int = 20_000, d: int = 5, seed: int = 0):
    """x ~ N(0, I_d), y = x·w0 + N(0, 1). Returns (x, y) as float32 arrays."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w0 = rng.normal(size=d).astype(np.float32)
    y = (x @ w0 + rng.normal(size=n)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def linear_model(x, y, batch_size: int | None = None):
    """Linear regression with unit noise: ℓ(w) = ½(y − x·w)² + ½ log 2π; λ = d/2."""
    d = x.shape[1]
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([d]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Normal(x[idx] @ w, 1.0), obs=y[idx])


def make_logistic_data(n: int = 20_000, d: int = 6, seed: int = 0):
    """x ~ N(0, I_d), y ~ Bernoulli(σ(x·w0)) with w0 ~ N(0, I_d / 2). Returns (x, y) as float32
    arrays."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w0 = rng.normal(size=d) / np.sqrt(2.0)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-x @ w0))).astype(np.float32)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def logistic_mle(x, y, iterations: int = 50) -> jnp.ndarray:
    """The maximum-likelihood weights of a logistic regression (Newton's method in float64): the
    exact minimizer of L_n, where λ̂(w*) has no bias from a non-zero gradient."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        step = np.linalg.solve((x * (p * (1 - p))[:, None]).T @ x, x.T @ (y - p))
        w += step
        if np.max(np.abs(step)) < 1e-12:
            break
    return jnp.asarray(w, jnp.float32)


def logistic_model(x, y, batch_size: int | None = None):
    """Logistic regression y ~ Bernoulli(σ(x·w)), a regular model: λ = d/2."""
    d = x.shape[1]
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([d]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w), obs=y[idx])


def make_rrr_data(m: int, n_out: int, h: int, r: int, n: int = 20_000, seed: int = 0):
    """Reduced-rank regression data y = B0·A0·x + ε with rank(B0·A0) = r.

    Returns (x, y, center) where center = {"A": [A0; 0] (h × m), "B": [B0, 0] (n_out × h)} is a
    true parameter with its h − r surplus hidden units switched off.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m))
    a0 = rng.normal(size=(r, m))
    b0 = rng.normal(size=(n_out, r))
    y = x @ (b0 @ a0).T + orthogonalize_noise(x, rng.normal(size=(n, n_out)))
    a = np.zeros((h, m))
    a[:r] = a0
    b = np.zeros((n_out, h))
    b[:, :r] = b0
    center = {"A": jnp.asarray(a, jnp.float32), "B": jnp.asarray(b, jnp.float32)}
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), center


def rrr_model(x, y, h: int, batch_size: int | None = None):
    """y ~ N(B·A·x, I) with A: h × M, B: N × h; λ by Aoyagi & Watanabe (2005)."""
    m, n_out = x.shape[1], y.shape[1]
    a = numpyro.sample("A", dist.Normal(0.0, 10.0).expand([h, m]).to_event(2))
    b = numpyro.sample("B", dist.Normal(0.0, 10.0).expand([n_out, h]).to_event(2))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Normal(x[idx] @ (b @ a).T, 1.0).to_event(1), obs=y[idx])


def make_crossing_data(n: int = 1_000, seed: int = 0):
    """x ~ N(0, 1) and noise y ⟂ x, so that L_n(w) − L_n(0) = ½·mean(x²)·(Π w_i^k_i)²."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1))
    y = orthogonalize_noise(x, rng.normal(size=(n, 1)))
    return jnp.asarray(x[:, 0], jnp.float32), jnp.asarray(y[:, 0], jnp.float32)


def crossing_model(x, y, powers: tuple[int, ...], batch_size: int | None = None):
    """y ~ N(x·Π w_i^k_i, 1): a normal crossing K(w) ∝ Π w_i^(2 k_i) at w* = 0."""
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([len(powers)]).to_event(1))
    product = jnp.prod(w ** jnp.asarray(powers))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Normal(x[idx] * product, 1.0), obs=y[idx])
