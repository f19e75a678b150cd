r"""Isotropic Gaussian mixtures and their exact denoisers.

A mixture with :math:`M` means :math:`m_1, \dots, m_M \in \mathbb{R}^d`, one shared variance
:math:`s^2 \ge 0` and uniform weights has, under :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`,
the posterior mean (Tweedie's formula)

.. math::

    D(x_t) = \sum_j w_j(x_t)\Big[m_j + \frac{\alpha_t s^2}{v_t}(x_t - \alpha_t m_j)\Big],
    \qquad v_t = \alpha_t^2 s^2 + \sigma_t^2,

    w(x_t) = \operatorname{softmax}_j\Big(-\frac{\|x_t - \alpha_t m_j\|^2}{2 v_t}\Big).

At :math:`s^2 = 0` the mixture is a set of point masses and :math:`D` is the empirical
(memorizing) denoiser. Written as a network, :math:`D` is one hidden layer with softmax
activation whose input and output weights are tied to the means.
"""

from __future__ import annotations

import math

import torch

from . import validate
from .diffusion import alpha as _alpha


def posterior_mean(
    x: torch.Tensor,
    a: torch.Tensor,
    s2: torch.Tensor,
    means: torch.Tensor,
    var: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The mixture posterior mean, batched over models; no input checks (the hot path).

    Shapes: ``x`` (..., n, d); ``a`` = alpha_t and ``s2`` = sigma_t^2 broadcastable to
    (..., n, 1); ``means`` (..., M, d); ``var`` broadcastable to (..., 1, 1); ``logit_bias``
    (optional, e.g. ``-inf`` on padded components) broadcastable to (..., n, M).

    The logits use :math:`\|x - a m_j\|^2 = \|x\|^2 - 2a\langle x, m_j\rangle + a^2\|m_j\|^2`
    with the :math:`\|x\|^2` term dropped (softmax ignores a per-row constant), so the
    work is two matrix products. The output is
    :math:`(1 - a\,r)\sum_j w_j m_j + r\,x` with :math:`r = a s^2 / v_t`.
    """
    v = a * a * var + s2
    sq_means = (means * means).sum(-1).unsqueeze(-2)
    logits = (a * (x @ means.mT) - 0.5 * (a * a) * sq_means) / v
    if logit_bias is not None:
        logits = logits + logit_bias
    w = torch.softmax(logits, dim=-1)
    r = a * var / v
    return (w @ means) * (1.0 - a * r) + r * x


def gmm_denoise(
    x_t: torch.Tensor,
    t: float | torch.Tensor,
    means: torch.Tensor,
    var: float | torch.Tensor,
) -> torch.Tensor:
    """Posterior mean E[x_0 | x_t] of the uniform isotropic mixture (``means``, ``var``).

    ``x_t`` has shape (..., d); ``t`` is a float or a tensor broadcastable to
    ``x_t.shape[:-1]`` with values in (0, 1); ``means`` is (M, d); ``var >= 0`` a float or a
    0-dim tensor (it may require grad). Exact at ``var = 0``. Returns a tensor shaped like
    ``x_t``.
    """
    validate.points(means, "means")
    validate.variance(var)
    validate.times(t)
    if x_t.shape[-1] != means.shape[-1]:
        raise ValueError(
            f"x_t has dimension {x_t.shape[-1]} but means have dimension {means.shape[-1]}"
        )
    t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
    try:
        t = torch.broadcast_to(t, x_t.shape[:-1])
    except RuntimeError as err:
        raise ValueError(
            f"t of shape {tuple(t.shape)} does not broadcast to x_t.shape[:-1] = "
            f"{tuple(x_t.shape[:-1])}"
        ) from err
    var = torch.as_tensor(var, dtype=x_t.dtype, device=x_t.device)
    flat = x_t.reshape(-1, x_t.shape[-1])
    tf = t.reshape(-1, 1)
    out = posterior_mean(flat, _alpha(tf), tf * tf, means.to(x_t.dtype), var)
    return out.reshape(x_t.shape)


class IsoGMM:
    """The uniform isotropic mixture with means (K, d) and shared variance ``var``."""

    def __init__(self, means: torch.Tensor, var: float | torch.Tensor = 1.0) -> None:
        self.means = validate.points(means, "means")
        self.var = validate.variance(var)

    @property
    def d(self) -> int:
        """Ambient dimension."""
        return self.means.shape[1]

    @property
    def K(self) -> int:
        """Number of components."""
        return self.means.shape[0]

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points and their component labels: label ~ uniform, x = mean + s * N(0, I)."""
        validate.positive_int(n, "n")
        kw = dict(generator=generator, device=self.means.device)
        labels = torch.randint(self.K, (n,), **kw)
        noise = torch.randn(n, self.d, dtype=self.means.dtype, **kw)
        return self.means[labels] + math.sqrt(float(self.var)) * noise, labels

    def denoise(self, x_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The exact posterior mean E[x_0 | x_t] under this mixture."""
        return gmm_denoise(x_t, t, self.means, self.var)


def random_iso_gmm(
    d: int,
    K: int,
    var: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> IsoGMM:
    """A mixture of ``K`` components in R^d with means sqrt(d) u_k, u_k uniform on the sphere."""
    validate.positive_int(d, "d")
    validate.positive_int(K, "K")
    validate.variance(var)
    # drawn on the generator's device, then moved: the same mixture whatever ``device`` is
    u = torch.randn(K, d, generator=generator, dtype=dtype,
                    device=generator.device if generator is not None else device).to(device)
    return IsoGMM(math.sqrt(d) * u / u.norm(dim=1, keepdim=True), var)


def memorizing(X: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The memorizing denoiser's parameters: every training point a mean, variance 0."""
    return validate.points(X, "X").clone(), 0.0


def partially_memorizing(
    X: torch.Tensor, M: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, float]:
    """``M`` distinct training points drawn uniformly without replacement, variance 0."""
    validate.points(X, "X")
    M = validate.model_size(M, X.shape[0])
    keep = torch.randperm(X.shape[0], generator=generator, device=X.device)[:M]
    return X[keep].clone(), 0.0
