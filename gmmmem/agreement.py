"""Whether two training recipes reached the same models (chapter 3).

Two phase-transition runs of one configuration and seed (same data, same start, same model
sizes) trained with different recipes are compared size by size: the memorization ratios
(each a fraction of independent generated samples) with a two-proportion z-score, the learned
variances by their relative difference, and the midpoints M_pt against their bootstrap
intervals (:func:`gmmmem.experiments.midpoint_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .experiments import PhaseTransitionResult


@dataclass(frozen=True)
class Agreement:
    """Size-by-size comparison of run ``b`` with run ``a`` (arrays over the common sizes)."""

    model_sizes: np.ndarray
    ratio_a: np.ndarray
    ratio_b: np.ndarray
    ratio_z: np.ndarray  # (b - a) / standard error of the difference; 0 where both are 0 or 1
    var_a: np.ndarray
    var_b: np.ndarray
    midpoint_a: float | None
    midpoint_b: float | None
    interval_a: tuple[float | None, float | None]
    interval_b: tuple[float | None, float | None]

    @property
    def var_rel_diff(self) -> np.ndarray:
        """|var_b - var_a| / var_a per size."""
        return np.abs(self.var_b - self.var_a) / self.var_a

    @property
    def max_abs_z(self) -> float:
        """The largest |z| of the ratios over the sizes."""
        return float(np.max(np.abs(self.ratio_z)))

    @property
    def midpoint_diff(self) -> float | None:
        """M_pt of b minus M_pt of a (None if either is not measured)."""
        if self.midpoint_a is None or self.midpoint_b is None:
            return None
        return self.midpoint_b - self.midpoint_a

    @property
    def midpoint_noise(self) -> float | None:
        """Sampling noise of that difference: the two intervals' half-widths added in
        quadrature (None if an interval is open)."""
        ends = [*self.interval_a, *self.interval_b]
        if any(v is None for v in ends):
            return None
        half = [(self.interval_a[1] - self.interval_a[0]) / 2, (self.interval_b[1] - self.interval_b[0]) / 2]
        return float(np.hypot(*half))


def compare(a: PhaseTransitionResult, b: PhaseTransitionResult) -> Agreement:
    """Compare two runs of the same configuration and seed, over the sizes both measured."""
    if (a.d, a.K, a.N) != (b.d, b.K, b.N):
        raise ValueError(f"different configurations: {(a.d, a.K, a.N)} and {(b.d, b.K, b.N)}")
    common = sorted(set(a.model_sizes) & set(b.model_sizes))
    if not common:
        raise ValueError("the runs share no model size")
    ia = [a.model_sizes.index(M) for M in common]
    ib = [b.model_sizes.index(M) for M in common]
    ra, rb = np.asarray(a.memorization_ratio)[ia], np.asarray(b.memorization_ratio)[ib]
    na, nb = a.eval_config.num_samples, b.eval_config.num_samples
    pooled = (ra * na + rb * nb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    z = np.divide(rb - ra, se, out=np.zeros_like(se), where=se > 0)
    return Agreement(
        model_sizes=np.asarray(common),
        ratio_a=ra, ratio_b=rb, ratio_z=z,
        var_a=np.asarray(a.learned_var)[ia], var_b=np.asarray(b.learned_var)[ib],
        midpoint_a=a.midpoint, midpoint_b=b.midpoint,
        interval_a=a.midpoint_interval, interval_b=b.midpoint_interval,
    )
