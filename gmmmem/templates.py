r"""Image-like low-rank data: coloured grayscale templates (the paper's Figures 5-6).

A sample is a grayscale template :math:`T_k \in [0,1]^{h\times w}` times a random colour
:math:`c \sim N(\mu_k, s_c^2 I_3)`: the image
:math:`x_0 = c \otimes T_k \in \mathbb{R}^{3\times h\times w}` has channel :math:`i` equal to
:math:`c_i T_k`. With uniform weights over :math:`K` templates the data are a mixture of rank-3
Gaussians in :math:`\mathbb{R}^{D}`, :math:`D = 3hw`: component :math:`k` has mean
:math:`\mu_k \otimes T_k` and covariance :math:`s_c^2 (I_3 \otimes T_k T_k^\top)`.

Posterior mean (derivation). Fix component :math:`j`, write :math:`n_j = \|T_j\|`,
:math:`u_j = T_j / n_j` and :math:`P_j = I_3 \otimes u_j u_j^\top` (the orthogonal projector onto
:math:`\operatorname{span}\{e_i \otimes u_j\}`, rank 3). Then :math:`x_0 = (n_j c) \otimes u_j` and,
under :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`,

.. math::

    x_t \mid j \sim N\big(\alpha_t n_j\,\mu_j \otimes u_j,\;
        C_j = \sigma_t^2 (I - P_j) + (\sigma_t^2 + \lambda_j) P_j\big),
    \qquad \lambda_j = \alpha_t^2 s_c^2 n_j^2 .

:math:`C_j` has eigenvalue :math:`\sigma_t^2` on :math:`\operatorname{range}(P_j)^\perp` and
:math:`\sigma_t^2 + \lambda_j` on :math:`\operatorname{range}(P_j)`, so (Woodbury and the matrix
determinant lemma, here in closed form)
:math:`C_j^{-1} = (I - P_j)/\sigma_t^2 + P_j/(\sigma_t^2 + \lambda_j)` and
:math:`\log\det C_j = D\log\sigma_t^2 + 3\log(1 + \lambda_j/\sigma_t^2)`. With the colour
projections :math:`p_j = (\langle x_t^{(i)}, u_j\rangle)_{i=1}^3 \in \mathbb{R}^3` one has
:math:`P_j x_t = p_j \otimes u_j`, :math:`\|(I-P_j)x_t\|^2 = \|x_t\|^2 - \|p_j\|^2`, and the
mean has no part orthogonal to :math:`\operatorname{range}(P_j)`. Hence

.. math::

    \log N(x_t; \alpha_t m_j, C_j) = -\frac{\|x_t\|^2 - \|p_j\|^2}{2\sigma_t^2}
        - \frac{\|p_j - \alpha_t n_j \mu_j\|^2}{2(\sigma_t^2 + \lambda_j)}
        - \frac32 \log\Big(1 + \frac{\lambda_j}{\sigma_t^2}\Big) + \mathrm{const},

where the constant :math:`-\tfrac D2 \log(2\pi\sigma_t^2)` is common to all :math:`j`. Dropping
also the common :math:`-\|x_t\|^2 / (2\sigma_t^2)`, the posterior weights are

.. math::

    w(x_t) = \operatorname{softmax}_j\Big(\frac{\|p_j\|^2}{2\sigma_t^2}
        - \frac{\|p_j - \alpha_t n_j \mu_j\|^2}{2(\sigma_t^2 + \lambda_j)}
        - \frac32 \log\Big(1 + \frac{\lambda_j}{\sigma_t^2}\Big)\Big).

The log-determinant term depends on :math:`j` through :math:`n_j` and is kept. Only :math:`p_j`
carries information about :math:`c` (:math:`p_j = \alpha_t n_j c + \sigma_t \varepsilon'`,
:math:`\varepsilon' \sim N(0, I_3)`), so

.. math::

    \mathbb{E}[c \mid x_t, j] = \mu_j + g_j (p_j - \alpha_t n_j \mu_j), \quad
    g_j = \frac{\alpha_t s_c^2 n_j}{\sigma_t^2 + \lambda_j}, \qquad
    D(x_t) = \mathbb{E}[x_0 \mid x_t] = \sum_j w_j(x_t)\, \mathbb{E}[c \mid x_t, j] \otimes T_j .

Everything is two matrix products over the flattened pixels, :math:`O(M h w)` per image; no
:math:`D \times D` matrix is formed. At :math:`s_c^2 = 0`, :math:`\lambda_j = g_j = 0` and the
logits become :math:`(\alpha_t\langle x_t, m_j\rangle - \alpha_t^2\|m_j\|^2/2)/\sigma_t^2` with
:math:`m_j = \mu_j \otimes T_j`: the memorizing denoiser of the point masses :math:`m_j`. No square
root of :math:`s_c^2` appears, so values and gradients stay finite at :math:`s_c^2 = 0`.
A template of zero norm has no direction :math:`u_j`; :func:`lowrank_denoise` and
:class:`ColoredTemplates` reject it with a ``ValueError``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import validate
from .diffusion import alpha as _alpha

#: Image sets :func:`load_templates` can read.
SOURCES = ("digits",)


# --------------------------------------------------------------------------- the denoiser


def posterior_mean(
    x: torch.Tensor,
    a: torch.Tensor,
    s2: torch.Tensor,
    templates: torch.Tensor,
    color_means: torch.Tensor,
    color_var: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The coloured-template posterior mean, batched over models; no input checks (the hot path).

    Shapes (``q = h * w`` flattened pixels): ``x`` (..., n, 3, q); ``a`` = alpha_t and
    ``s2`` = sigma_t^2 broadcastable to (..., n, 1); ``templates`` (..., M, q), every row of
    non-zero norm (a zero row gives NaN); ``color_means`` (..., M, 3); ``color_var``
    broadcastable to (..., 1, 1) (a per-component variance of shape (..., 1, M) also works);
    ``logit_bias`` (optional, e.g. ``-inf`` on padded components) broadcastable to (..., n, M).
    Returns (..., n, 3, q). Both products run over the flattened (3n, q) rows: two matrix
    products of (3n, q) and (q, M) per model.

    With :math:`p_j` the projections of the three channels on :math:`u_j = T_j/n_j`,
    :math:`\lambda_j = a^2 s_c^2 n_j^2` and :math:`\delta_j = p_j - a n_j \mu_j`, the logits are
    :math:`\|p_j\|^2/(2\sigma^2) - \|\delta_j\|^2 / (2(\sigma^2+\lambda_j)) -
    \tfrac32\log(1 + \lambda_j/\sigma^2)` and the output is
    :math:`\sum_j w_j (\mu_j + g_j \delta_j) \otimes T_j` with
    :math:`g_j = a s_c^2 n_j / (\sigma^2 + \lambda_j)` (see the module docstring).
    """
    sq_norms = (templates * templates).sum(-1)  # (..., M)
    norms = torch.sqrt(sq_norms)
    units = templates / norms.unsqueeze(-1)  # (..., M, q)
    n = x.shape[-3]
    p = (x.flatten(-3, -2) @ units.mT).unflatten(-2, (n, 3))  # (..., n, 3, M)
    scaled_means = (norms.unsqueeze(-1) * color_means).mT.unsqueeze(-3)  # (..., 1, 3, M)
    delta = p - a.unsqueeze(-1) * scaled_means  # (..., n, 3, M)
    lam = (a * a) * color_var * sq_norms.unsqueeze(-2)  # (..., n, M)
    v = s2 + lam
    logits = (
        (p * p).sum(-2) / (2.0 * s2)
        - (delta * delta).sum(-2) / (2.0 * v)
        - 1.5 * torch.log1p(lam / s2)
    )
    if logit_bias is not None:
        logits = logits + logit_bias
    w = torch.softmax(logits, dim=-1)  # (..., n, M)
    gain = a * color_var * norms.unsqueeze(-2) / v  # (..., n, M)
    colors = color_means.mT.unsqueeze(-3) + gain.unsqueeze(-2) * delta  # (..., n, 3, M)
    weighted = (colors * w.unsqueeze(-2)).flatten(-3, -2)  # (..., 3n, M)
    return (weighted @ templates).unflatten(-2, (n, 3))


def lowrank_denoise(
    x_t: torch.Tensor,
    t: float | torch.Tensor,
    templates: torch.Tensor,
    color_means: torch.Tensor,
    color_var: float | torch.Tensor,
) -> torch.Tensor:
    """Posterior mean E[x_0 | x_t] of the uniform coloured-template mixture.

    ``x_t`` has shape (..., 3, h, w); ``t`` is a float or a tensor broadcastable to
    ``x_t.shape[:-3]`` with values in (0, 1); ``templates`` is (M, h, w) with no all-zero
    template; ``color_means`` is (M, 3); ``color_var >= 0`` a float or a 0-dim tensor (it may
    require grad). Exact at ``color_var = 0``. Returns a tensor shaped like ``x_t``. The
    formula and its derivation are in the module docstring.
    """
    _check_model(templates, color_means, color_var)
    validate.times(t)
    _check_images(x_t, templates.shape[-2:], "x_t")
    t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
    lead = x_t.shape[:-3]
    try:
        t = torch.broadcast_to(t, lead)
    except RuntimeError as err:
        raise ValueError(
            f"t of shape {tuple(t.shape)} does not broadcast to x_t.shape[:-3] = {tuple(lead)}"
        ) from err
    var = torch.as_tensor(color_var, dtype=x_t.dtype, device=x_t.device)
    flat = x_t.reshape(-1, 3, x_t.shape[-2] * x_t.shape[-1])
    tf = t.reshape(-1, 1)
    out = posterior_mean(
        flat,
        _alpha(tf),
        tf * tf,
        templates.to(x_t.dtype).flatten(1),
        color_means.to(x_t.dtype),
        var,
    )
    return out.reshape(x_t.shape)


def colorize(colors: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """Images c ⊗ T: ``colors`` (..., 3) and ``templates`` (..., h, w) give (..., 3, h, w)."""
    return colors[..., :, None, None] * templates[..., None, :, :]


class ColoredTemplates:
    """The uniform mixture of ``c ⊗ T_k`` with c ~ N(color_means[k], color_var I_3).

    ``templates`` is (K, h, w) with no all-zero template, ``color_means`` (K, 3) and
    ``color_var >= 0`` a scalar. The paper's Figures 5-6 use color_means = 0, color_var = 1.
    """

    def __init__(
        self,
        templates: torch.Tensor,
        color_means: torch.Tensor,
        color_var: float | torch.Tensor = 1.0,
    ) -> None:
        _check_model(templates, color_means, color_var)
        self.templates = templates
        self.color_means = color_means
        self.color_var = color_var

    @property
    def K(self) -> int:
        """Number of templates (components)."""
        return self.templates.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(3, h, w)."""
        return (3, *self.templates.shape[1:])

    @property
    def d(self) -> int:
        """Ambient dimension 3 h w."""
        return math.prod(self.image_shape)

    def means(self) -> torch.Tensor:
        """Component means mu_k ⊗ T_k, shape (K, 3, h, w)."""
        return colorize(self.color_means, self.templates)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images (n, 3, h, w) and their labels: label ~ uniform, image = c ⊗ T_label."""
        validate.positive_int(n, "n")
        kw = dict(generator=generator, device=self.templates.device)
        labels = torch.randint(self.K, (n,), **kw)
        noise = torch.randn(n, 3, dtype=self.color_means.dtype, **kw)
        colors = self.color_means[labels] + math.sqrt(float(self.color_var)) * noise
        return colorize(colors, self.templates[labels]), labels

    def denoise(self, x_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The exact posterior mean E[x_0 | x_t] under this mixture."""
        return lowrank_denoise(x_t, t, self.templates, self.color_means, self.color_var)


def _check_model(
    templates: torch.Tensor, color_means: torch.Tensor, color_var: float | torch.Tensor
) -> None:
    """Templates (M, h, w) of non-zero norm, colour means (M, 3), a colour variance >= 0."""
    if not isinstance(templates, torch.Tensor) or templates.ndim != 3:
        got = tuple(templates.shape) if isinstance(templates, torch.Tensor) else templates
        raise ValueError(f"templates must be a tensor of shape (M, h, w), got {got!r}")
    validate.points(templates.flatten(1), "templates")
    zero = (templates.flatten(1).abs().amax(1) == 0).nonzero().flatten()
    if len(zero):
        raise ValueError(
            f"templates {zero.tolist()} are all zero (a template needs a non-zero norm)"
        )
    validate.points(color_means, "color_means", dim=3)
    if color_means.shape[0] != templates.shape[0]:
        raise ValueError(
            f"color_means has {color_means.shape[0]} rows "
            f"but there are {templates.shape[0]} templates"
        )
    validate.variance(color_var, "color_var")


def _check_images(x: torch.Tensor, hw: tuple[int, int], name: str) -> None:
    """A floating tensor of shape (..., 3, h, w)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 3 or tuple(x.shape[-3:]) != (3, *hw):
        raise ValueError(f"{name} must have shape (..., 3, {hw[0]}, {hw[1]}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


# --------------------------------------------------------------------------- real templates


def load_templates(
    K: int,
    size: int = 15,
    source: str = "digits",
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``K`` grayscale templates (K, size, size) with values in [0, 1] from a bundled image set.

    ``source="digits"``: scikit-learn's 1,797 handwritten digits (8 x 8, intensities 0..16,
    read from a file inside the scikit-learn wheel; no download). For ``K <= 10`` template k is
    an image of digit k (which one of that class is drawn with ``seed``); for ``K > 10`` they are
    ``K`` distinct images drawn with ``seed``. Each is resized to ``size x size`` (bilinear,
    antialiased when shrinking) and divided by 16. Deterministic given (K, size, source, seed).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    validate.positive_int(K, "K")
    size = validate.positive_int(size, "size")
    images, labels = _digits()
    if K > len(images):
        raise ValueError(f"K must be <= {len(images)} (the images in {source!r}), got {K}")
    g = torch.Generator().manual_seed(int(seed))
    if K <= 10:
        index = [_draw(np.flatnonzero(labels == k), g) for k in range(K)]
    else:
        index = torch.randperm(len(images), generator=g)[:K].tolist()
    x = torch.as_tensor(images[index], dtype=torch.float64).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = (x.squeeze(1) / 16.0).clamp(0.0, 1.0)
    return x.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _draw(candidates: np.ndarray, g: torch.Generator) -> int:
    """One entry of ``candidates`` chosen uniformly with ``g``."""
    return int(candidates[int(torch.randint(len(candidates), (1,), generator=g))])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 8, 8) in 0..16 and labels (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "load_templates(source='digits') needs scikit-learn, which ships the digits images: "
            "pip install scikit-learn"
        ) from err
    return _cached_digits(load_digits)


@functools.lru_cache(maxsize=1)
def _cached_digits(load_digits) -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return np.asarray(data.images, dtype=np.float64), np.asarray(data.target)
