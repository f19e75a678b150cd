"""Independent float64 references the tests compare gmmmem against."""

from __future__ import annotations

import torch


def mixture_log_density(x_t: torch.Tensor, t: torch.Tensor, means: torch.Tensor, var: float):
    """log p_t(x_t) of the noised uniform mixture, from dense MultivariateNormal densities."""
    a = torch.sqrt(1 - t * t)[..., None, None]
    d = means.shape[1]
    cov = (a * a * var + (t * t)[..., None, None]) * torch.eye(d, dtype=torch.float64)
    logs = []
    for m in means:
        mvn = torch.distributions.MultivariateNormal(a[..., 0] * m, covariance_matrix=cov)
        logs.append(mvn.log_prob(x_t))
    return torch.logsumexp(torch.stack(logs, -1), -1) - torch.log(torch.tensor(len(means)))


def tweedie_posterior_mean(x_t, t, means, var):
    """E[x_0 | x_t] = (x_t + sigma_t^2 grad log p_t(x_t)) / alpha_t, the score by autograd."""
    x = x_t.detach().clone().requires_grad_(True)
    t = torch.as_tensor(t, dtype=torch.float64).expand(x_t.shape[:-1])
    (score,) = torch.autograd.grad(mixture_log_density(x, t, means, var).sum(), x)
    return (x_t + (t * t)[..., None] * score) / torch.sqrt(1 - t * t)[..., None]


def single_gaussian_loss(X: torch.Tensor, t: float, mean: torch.Tensor, var: float) -> float:
    r"""Exact L_{N,t} of the one-component model (``mean``, ``var``) on data ``X``.

    D(x_t) = m + r (x_t - a m) with r = a s^2 / (a^2 s^2 + sigma^2), so for x_t = a x + sigma eps:
    E||D - x||^2 = (1 - a r)^2 ||m - x||^2 + r^2 sigma^2 d.
    """
    a = (1 - t * t) ** 0.5
    r = a * var / (a * a * var + t * t)
    dist2 = ((mean - X) ** 2).sum(-1)
    return float(((1 - a * r) ** 2 * dist2 + r * r * t * t * X.shape[1]).mean())


def dense_template_posterior_mean(x_t, t, templates, color_means, color_var):
    r"""E[x_0 | x_t] of the coloured-template mixture from dense (3hw x 3hw) covariances.

    Component j: x_0 = c ⊗ T_j, c ~ N(mu_j, s_j^2 I_3), so m_j = mu_j ⊗ T_j and
    Sigma_j = s_j^2 B_j B_j^T with B_j = I_3 ⊗ vec(T_j) (3hw x 3). The posterior is
    w_j ∝ N(x_t; a m_j, a^2 Sigma_j + sigma^2 I) (MultivariateNormal.log_prob) and
    E[x_0 | x_t, j] = m_j + a Sigma_j C_j^{-1} (x_t - a m_j). ``x_t`` (n, 3, h, w), ``t`` a float,
    ``color_var`` a float or a list of M floats. float64 throughout.
    """
    n, M = x_t.shape[0], templates.shape[0]
    D = x_t[0].numel()
    a, s2 = (1 - t * t) ** 0.5, t * t
    var = torch.as_tensor(color_var, dtype=torch.float64).expand(M)
    x = x_t.reshape(n, D)
    logs, cond = [], []
    for j in range(M):
        m = (color_means[j][:, None, None] * templates[j]).reshape(D)
        B = torch.kron(torch.eye(3, dtype=torch.float64), templates[j].reshape(-1, 1))
        sigma_j = var[j] * B @ B.T
        C = a * a * sigma_j + s2 * torch.eye(D, dtype=torch.float64)
        logs.append(torch.distributions.MultivariateNormal(a * m, covariance_matrix=C).log_prob(x))
        cond.append(m + torch.linalg.solve(C, (x - a * m).T).T @ (a * sigma_j))
    w = torch.softmax(torch.stack(logs, -1), -1)
    return (w[:, :, None] * torch.stack(cond, 1)).sum(1).reshape(x_t.shape)
