r"""Memorization of generated samples and where a model's learned means sit.

Distances are Euclidean and computed exactly from coordinate differences
(``torch.cdist`` without the matrix-product shortcut), so a point lying on a training point
is at distance exactly 0 from it.

**Memorized sample** (the authors' criterion). With :math:`d_1 \le d_2` the distances from
:math:`x` to its nearest and second-nearest training points, :math:`x` is memorized when
:math:`d_1 < \tau d_2`, :math:`\tau = 1/3`. The memorization ratio is the fraction of
memorized samples. (A sample on a training point that has an exact duplicate in the training
set has :math:`d_1 = d_2 = 0` and is not counted.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import validate

THRESHOLD = 1.0 / 3.0


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise distances (len(a), len(b)) in the promoted dtype of a and b."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    return torch.cdist(a.to(dtype), b.to(dtype), compute_mode="donot_use_mm_for_euclid_dist")


def _check_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    return float(threshold)


def nearest_two(
    samples: torch.Tensor, X: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each sample: distance to the nearest training point, to the second nearest, and
    the index (into ``X``) of the nearest. ``samples`` (n, d), ``X`` (N, d) with N >= 2."""
    validate.points(samples, "samples")
    validate.points(X, "X", dim=samples.shape[1])
    if X.shape[0] < 2:
        raise ValueError(f"X needs at least 2 training points, got {X.shape[0]}")
    dist, idx = _distances(samples, X).topk(2, dim=1, largest=False)
    return dist[:, 0], dist[:, 1], idx[:, 0]


def memorized(samples: torch.Tensor, X: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    r"""Boolean (n,): whether each sample is memorized, :math:`d_1 < \tau d_2` (``threshold`` = tau)."""
    threshold = _check_threshold(threshold)
    d1, d2, _ = nearest_two(samples, X)
    return d1 < threshold * d2


def memorization_ratio(samples: torch.Tensor, X: torch.Tensor, threshold: float = THRESHOLD) -> float:
    r"""Fraction of samples with :math:`d_1 < \tau d_2` (``threshold`` = tau, 1/3 by default)."""
    return float(memorized(samples, X, threshold).double().mean())


@dataclass(frozen=True)
class MeansStatistics:
    """Where the M learned means sit; see :func:`means_statistics` for the definitions."""

    M: int
    near_true_mean: int
    near_training_point: int
    true_means_found: int
    mean_dist_true_mean: float
    mean_dist_training_point: float
    radius: float


def means_statistics(
    means: torch.Tensor,
    true_means: torch.Tensor,
    X: torch.Tensor,
    radius: float | None = None,
    threshold: float = THRESHOLD,
) -> MeansStatistics:
    r"""Count the learned means near a true mean and near a training point.

    For learned mean :math:`m_j` (``means``, (M, d)) let
    :math:`a_j = \min_k \|m_j - \mu_k\|` (true means ``true_means``, (K, d)) and
    :math:`b_j \le b'_j` its distances to the nearest and second-nearest training points
    (``X``, (N, d), N >= 2).

    * near a training point: :math:`b_j < \tau b'_j` -- the memorization criterion for
      samples, ``threshold`` = tau = 1/3;
    * near a true mean: :math:`a_j < r`. By default

      .. math:: r^2 = \frac14 \cdot \frac1N \sum_i \min_k \|x_i - \mu_k\|^2 \approx \frac{d s_*^2}{4},

      a quarter of the mean squared distance of a training point to its nearest true mean.
      A training point of a cluster with variance :math:`s_*^2` lies at squared distance
      :math:`\approx d s_*^2` from its mean (relative spread :math:`\sqrt{2/d}`), so a
      learned mean within :math:`r` has left any training point it started on; the average
      of :math:`n_c \ge 5` points of one cluster (squared distance
      :math:`\approx d s_*^2 / n_c`) also counts. ``radius`` overrides :math:`r`.

    The two notions are not exclusive in general, but in high dimension they practically
    are. Returned: the counts :math:`\#\{j: a_j < r\}` (``near_true_mean``) and
    :math:`\#\{j: b_j < \tau b'_j\}` (``near_training_point``); ``true_means_found``
    :math:`= \#\{k: \min_j \|m_j - \mu_k\| < r\}`; the averages
    :math:`\frac1M \sum_j a_j` (``mean_dist_true_mean``) and :math:`\frac1M \sum_j b_j`
    (``mean_dist_training_point``); and ``radius`` = :math:`r`.
    """
    validate.points(means, "means")
    validate.points(true_means, "true_means", dim=means.shape[1])
    validate.points(X, "X", dim=means.shape[1])
    threshold = _check_threshold(threshold)
    to_true = _distances(means, true_means)
    if radius is None:
        radius = 0.5 * math.sqrt(float(_distances(X, true_means).min(1).values.square().mean()))
    elif not 0.0 < radius < math.inf:
        raise ValueError(f"radius must be finite and > 0, got {radius}")
    b, b2, _ = nearest_two(means, X)
    a = to_true.min(1).values
    return MeansStatistics(
        M=means.shape[0],
        near_true_mean=int((a < radius).sum()),
        near_training_point=int((b < threshold * b2).sum()),
        true_means_found=int((to_true.min(0).values < radius).sum()),
        mean_dist_true_mean=float(a.double().mean()),
        mean_dist_training_point=float(b.double().mean()),
        radius=float(radius),
    )


@dataclass(frozen=True)
class TemplateStatistics:
    """Where the M learned components of a template model sit; see :func:`template_statistics`."""

    M: int
    near_training_image: int
    true_templates_found: int
    mean_template_cosine: float
    mean_color_norm: float


def template_statistics(
    templates: torch.Tensor,
    color_means: torch.Tensor,
    true_templates: torch.Tensor,
    X: torch.Tensor,
    cosine: float = 0.99,
    threshold: float = THRESHOLD,
) -> TemplateStatistics:
    r"""Summaries of a learned coloured-template mixture.

    ``templates`` (M, h, w) and ``color_means`` (M, 3) are the learned :math:`T_j, \mu_j`,
    ``true_templates`` (K, h, w) the data's, ``X`` (N, 3hw) the flattened training images. A
    training image :math:`c \otimes T^*_k` has exactly the template :math:`T^*_k`, so a template
    alone does not tell memorizing from generalizing; the colours do. Returned:

    * ``near_training_image``: components whose mean image :math:`\mu_j \otimes T_j` meets the
      memorization criterion against ``X`` (nearest < ``threshold`` x second nearest);
    * ``true_templates_found``: true templates with some learned template at absolute cosine
      similarity >= ``cosine`` (a template is defined up to sign and scale);
    * ``mean_template_cosine``: the mean over j of :math:`\max_k |\cos(T_j, T^*_k)|`;
    * ``mean_color_norm``: the mean of :math:`\|\mu_j\| \cdot \mathrm{rms}(T_j)`, the colour
      scaled to templates of root-mean-square pixel 1 (the true colour means are 0).
    """
    if templates.ndim != 3 or true_templates.ndim != 3:
        raise ValueError("templates and true_templates must have shape (M, h, w) and (K, h, w)")
    flat, true_flat = templates.flatten(1), true_templates.flatten(1)
    validate.points(flat, "templates")
    validate.points(true_flat, "true_templates", dim=flat.shape[1])
    validate.points(color_means, "color_means", dim=3)
    validate.points(X, "X", dim=3 * flat.shape[1])
    threshold = _check_threshold(threshold)
    unit = flat / flat.norm(dim=1, keepdim=True)
    true_unit = true_flat / true_flat.norm(dim=1, keepdim=True)
    cos = (unit @ true_unit.T).abs()  # (M, K)
    images = (color_means[:, :, None] * flat[:, None, :]).flatten(1)
    b, b2, _ = nearest_two(images, X)
    rms = flat.square().mean(1).sqrt()
    return TemplateStatistics(
        M=flat.shape[0],
        near_training_image=int((b < threshold * b2).sum()),
        true_templates_found=int((cos.amax(0) >= cosine).sum()),
        mean_template_cosine=float(cos.amax(1).double().mean()),
        mean_color_norm=float((color_means.norm(dim=1) * rms).double().mean()),
    )
