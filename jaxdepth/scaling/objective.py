"""The approach-3 fitting objective: Huber loss on log-loss residuals of a log-sum-exp law.

Every law in this package predicts `log L_i = LSE_k(z_ki)` with terms `z_ki = C_k . f_i`
linear in per-run features `f_i = (1, log N_i, log T_i, log D_i, log W_i, ...)` and
coefficients `C(theta)` that may be nonlinear in the parameters. This is the form of
Hoffmann et al. 2022 (arXiv 2203.15556, approach 3) and of its replication
(Besiroglu et al. 2024, arXiv 2404.10102): minimise
`sum_i w_i Huber_delta(LSE_k(z_ki) - log L_i)`; the Huber terms are summed, not averaged.

The gradient with respect to `C` is written by hand (`jax.custom_vjp`) as two matrix
products: autodiff of the same expression is 5-30x slower on CPU under `vmap` over
thousands of starts, and the multi-start fit is dominated by this function.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def huber(r, delta):
    """Huber function: `r^2/2` for `|r| <= delta`, else `delta (|r| - delta/2)`
    (Huber 1964; the same as `scipy.special.huber(delta, r)` used by arXiv 2404.10102)."""
    ar = jnp.abs(r)
    return jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def _lse_terms(coef_KJ, features_NJ):
    """log-sum-exp over the K terms, with the K exponentials kept for the gradient.
    K is small and static: unrolled elementwise ops fuse far better on CPU than a
    reduction over a leading axis."""
    z_KN = coef_KJ @ features_NJ.T
    m_N = z_KN[0]
    for k in range(1, z_KN.shape[0]):
        m_N = jnp.maximum(m_N, z_KN[k])
    exp_KN = [jnp.exp(z_KN[k] - m_N) for k in range(z_KN.shape[0])]
    total_N = functools.reduce(jnp.add, exp_KN)
    return m_N + jnp.log(total_N), exp_KN, total_N


@jax.custom_vjp
def lse_huber(coef_KJ, features_NJ, log_loss_N, weight_N, delta):
    """`sum_i weight_i * Huber_delta(LSE_k(coef_KJ @ features_i) - log_loss_i)`.

    Integer weights are how a bootstrap resample is expressed without changing shapes
    (a run drawn m times has weight m), so one compiled function serves every replicate."""
    pred_N, _, _ = _lse_terms(coef_KJ, features_NJ)
    return huber(pred_N - log_loss_N, delta) @ weight_N


def _lse_huber_fwd(coef_KJ, features_NJ, log_loss_N, weight_N, delta):
    pred_N, exp_KN, total_N = _lse_terms(coef_KJ, features_NJ)
    r_N = pred_N - log_loss_N
    value = huber(r_N, delta) @ weight_N
    # d/dz_k of the objective = w * huber'(r) * softmax_k(z); huber'(r) = clip(r, -delta, delta)
    c_N = weight_N * jnp.clip(r_N, -delta, delta) / total_N
    grad_KJ = jnp.stack([c_N * e for e in exp_KN]) @ features_NJ
    return value, (grad_KJ, features_NJ, log_loss_N, weight_N, delta)


def _lse_huber_bwd(res, g):
    grad_KJ, features_NJ, log_loss_N, weight_N, delta = res
    return (g * grad_KJ, jnp.zeros_like(features_NJ), jnp.zeros_like(log_loss_N),
            jnp.zeros_like(weight_N), jnp.zeros_like(delta))


lse_huber.defvjp(_lse_huber_fwd, _lse_huber_bwd)


def lse_huber_numpy(coef_KJ, features_NJ, log_loss_N, weight_N, delta):
    """float64 numpy twin of `lse_huber`: returns (value, d value / d coef_KJ). Used by the
    scipy polish, where a jitted call per evaluation would cost two thread hand-offs."""
    z_KN = coef_KJ @ features_NJ.T
    m_N = z_KN.max(axis=0)
    exp_KN = np.exp(z_KN - m_N)
    total_N = exp_KN.sum(axis=0)
    r_N = m_N + np.log(total_N) - log_loss_N
    ar = np.abs(r_N)
    value = np.where(ar <= delta, 0.5 * r_N * r_N, delta * (ar - 0.5 * delta)) @ weight_N
    c_N = weight_N * np.clip(r_N, -delta, delta) / total_N
    return float(value), (exp_KN * c_N) @ features_NJ


def log_predict(coef_KJ, features_NJ) -> np.ndarray:
    """Predicted log-loss `LSE_k(coef_KJ @ f_i)` in float64 numpy (for reporting)."""
    z = np.asarray(coef_KJ, np.float64) @ np.asarray(features_NJ, np.float64).T
    m = z.max(axis=0)
    return m + np.log(np.exp(z - m).sum(axis=0))
