r"""The phase-transition experiment (Figure 2): train mixtures of growing size M and measure.

For one configuration (dimension d, K true components, N training points) this trains one
mixture denoiser per model size M (all sizes at once, :func:`gmmmem.train.train_gmm`) and
records, per size:

* the memorization ratio of samples drawn with the DDIM sampler over the 26 times;
* the training and test losses of the trained model at every time (x0 units, Monte Carlo);
* the reference losses at every time: the true mixture (generalizing), the memorizing
  denoiser (all N training points) and the partially memorizing one (the M training points
  the model started from), on the training and on the test set;
* the learned variance and where the learned means sit (:func:`gmmmem.metrics.means_statistics`).

The transition is summarized by ``transition = (start, end)``: the smallest model sizes
whose ratio reaches 0.1 and 0.9.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import metrics, presets, provenance, results, validate
from .config import check_scale
from .device import resolve
from .diffusion import time_grid
from .losses import crossover, mc_losses
from .mixtures import IsoGMM, gmm_denoise, random_iso_gmm
from .results import LossHistory, MeasuredRun, ReferenceLosses, Snapshots, floats
from .sampling import ddim_sample
from .templates import ColoredTemplates, load_templates
from .train import STARTS, TrainConfig, pmem_init_order, random_start, train_gmm
from .train_templates import train_templates


@dataclass(frozen=True)
class EvalConfig:
    """How a trained model is measured: generated samples and Monte Carlo noise draws."""

    num_samples: int
    loss_draws: int

    def __post_init__(self) -> None:
        for name in ("num_samples", "loss_draws"):
            object.__setattr__(self, name, validate.integer(getattr(self, name), name))


#: How each scale measures a trained model (:data:`gmmmem.presets.EVAL`).
EVAL_PRESETS = {scale: EvalConfig(**fields) for scale, fields in presets.EVAL.items()}

#: Ratio levels that mark the start and the end of the transition.
TRANSITION_LEVELS = (0.1, 0.9)

#: How many points of the loss history are kept in a result file.
HISTORY_POINTS = 200


def transition(model_sizes: Sequence[int], ratio: Sequence[float]) -> tuple[int | None, int | None]:
    """The smallest model sizes whose memorization ratio reaches 0.1 and 0.9 (None: never)."""
    found = []
    for level in TRANSITION_LEVELS:
        hits = [M for M, r in zip(model_sizes, ratio) if r >= level]
        found.append(min(hits) if hits else None)
    return found[0], found[1]


#: Why a midpoint is None (:func:`midpoint_status`); a measured one is ``MEASURED``.
MEASURED, BELOW_SMALLEST, NOT_REACHED = "measured", "below the smallest size", "not reached"


def midpoint(model_sizes: Sequence[int], ratio: Sequence[float]) -> float | None:
    """The model size where the ratio first reaches 0.5, interpolated linearly between two
    measured sizes; None when it lies outside them (:func:`midpoint_status` says where)."""
    for k, r in enumerate(ratio):
        if r >= 0.5:
            if k == 0:
                return None
            r0, M0, M1 = ratio[k - 1], model_sizes[k - 1], model_sizes[k]
            return float(M0 + (0.5 - r0) / (r - r0) * (M1 - M0))
    return None


#: Bootstrap replicates and coverage of :func:`midpoint_interval`.
BOOTSTRAP_DRAWS = 2000
INTERVAL_LEVEL = 0.95


def midpoint_interval(
    model_sizes: Sequence[int],
    ratio: Sequence[float],
    num_samples: int,
    level: float = INTERVAL_LEVEL,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """A bootstrap ``level`` interval for :func:`midpoint` from the generated samples.

    Each size's ratio is a fraction of ``num_samples`` independent samples, so resampling the
    samples of a size with replacement draws its count from Binomial(num_samples, ratio); the
    midpoint of each of ``draws`` resampled curves is located as :func:`midpoint` does, and the
    interval is their central ``level`` range. An end is None where more than (1 - level) / 2
    of the replicates have no midpoint on that side (below the smallest size, or never 0.5).
    It measures the sampling noise at fixed trained models, not the spread over training seeds.
    """
    sizes = np.asarray(model_sizes, dtype=float)
    r = np.asarray(ratio, dtype=float)
    validate.positive_int(num_samples, "num_samples")
    validate.positive_int(draws, "draws")
    if sizes.ndim != 1 or sizes.shape != r.shape or len(sizes) == 0:
        raise ValueError("model_sizes and ratio must be equally long, non-empty sequences")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    boot = rng.binomial(num_samples, np.clip(r, 0.0, 1.0), size=(draws, len(r))) / num_samples
    hit = boot >= 0.5
    first = np.where(hit.any(1), hit.argmax(1), len(r))  # len(r): never reaches 0.5
    mids = np.full(draws, np.inf)
    inside = (first > 0) & (first < len(r))
    k = first[inside]
    r0, r1 = boot[inside, k - 1], boot[inside, k]
    mids[inside] = sizes[k - 1] + (0.5 - r0) / (r1 - r0) * (sizes[k] - sizes[k - 1])
    mids[first == 0] = -np.inf  # reached at the smallest size: the midpoint lies at or below it
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(mids, [tail, 1.0 - tail], method="inverted_cdf")
    return (float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None)


def midpoint_status(ratio: Sequence[float]) -> str:
    """Whether the ratio crosses 0.5 between measured sizes: ``"measured"``; ``"below the
    smallest size"`` (the smallest already reaches 0.5); ``"not reached"`` (no size does)."""
    hits = [r >= 0.5 for r in ratio]
    if not any(hits):
        return NOT_REACHED
    return BELOW_SMALLEST if hits[0] else MEASURED


#: The keys of a phase-transition result file.
_FILE_KEYS = ("d", "K", "N", "model_sizes", "times", "memorization_ratio", "train_loss", "test_loss",
              "reference", "learned_var", "means_stats", "loss_history", "arrays", "provenance")


@dataclass(eq=False)
class TransitionResult(MeasuredRun, abc.ABC):
    """What one phase-transition run measures, for mixtures (:class:`PhaseTransitionResult`)
    and coloured templates (:class:`TemplateTransitionResult`) alike: per model size (S) and
    time of the grid (T), float64 arrays. ``X`` holds the N training points, flattened (N, D)."""

    d: int
    K: int
    N: int
    model_sizes: list[int]
    times: np.ndarray  # (T,)
    memorization_ratio: np.ndarray  # (S,)
    train_loss: np.ndarray  # (S, T), clean-point units
    test_loss: np.ndarray  # (S, T)
    reference: ReferenceLosses
    learned_var: np.ndarray  # (S,)
    loss_history: LossHistory
    X: np.ndarray  # (N, D)
    provenance: dict[str, Any] = field(repr=False)

    #: The ``experiment`` of the settings, and the name of such a file in errors.
    EXPERIMENT, KIND = "", ""

    @property
    def fractions(self) -> np.ndarray:
        """M/N of every model size (S,)."""
        return np.asarray(self.model_sizes) / self.N

    @property
    def transition(self) -> tuple[int | None, int | None]:
        """(start, end): smallest sizes with memorization ratio >= 0.1 and >= 0.9."""
        return transition(self.model_sizes, self.memorization_ratio)

    @property
    def midpoint(self) -> float | None:
        """M_pt: the model size where the ratio reaches 0.5 (linear interpolation); None
        outside the measured sizes (:attr:`midpoint_status`)."""
        return midpoint(self.model_sizes, self.memorization_ratio)

    @property
    def midpoint_over_N(self) -> float | None:
        """M_pt / N (None where M_pt is)."""
        mid = self.midpoint
        return None if mid is None else mid / self.N

    @property
    def midpoint_interval(self) -> tuple[float | None, float | None]:
        """A 95% bootstrap interval for M_pt over the generated samples (:func:`midpoint_interval`)."""
        return midpoint_interval(self.model_sizes, self.memorization_ratio, self.eval_config.num_samples)

    @property
    def midpoint_status(self) -> str:
        """Whether M_pt was measured, lies below the smallest size or was not reached."""
        return midpoint_status(self.memorization_ratio)

    def crossover(self, weights: Sequence[float] | None = None) -> float:
        """M*/N where the true model's and the partially memorizing models' Monte Carlo
        training losses cross, time weights ``weights`` (uniform by default), by
        :func:`gmmmem.losses.crossover`; NaN (with a warning) when they do not."""
        w = np.ones(len(self.times)) if weights is None else weights
        return crossover(self.fractions, self.reference.true_train, self.reference.pmem_train, w)

    @abc.abstractmethod
    def _learned(self) -> tuple[dict[str, Any], list]:
        """The file's ``arrays`` other than ``X``, and its ``means_stats``."""

    @classmethod
    @abc.abstractmethod
    def _learned_from_json(cls, arrays: dict[str, Any], stats: list[dict]) -> dict[str, Any]:
        """The fields of the model-specific parts, from the file's ``arrays`` and ``means_stats``."""

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically), with its midpoint and midpoint status."""
        arrays, stats = self._learned()
        return results.save(path, {
            "d": self.d, "K": self.K, "N": self.N, "model_sizes": self.model_sizes, "times": self.times,
            "memorization_ratio": self.memorization_ratio, "train_loss": self.train_loss,
            "test_loss": self.test_loss, "reference": self.reference, "learned_var": self.learned_var,
            "means_stats": stats, "loss_history": self.loss_history, "arrays": {**arrays, "X": self.X},
            "provenance": self.provenance,
            "midpoint": self.midpoint, "midpoint_status": self.midpoint_status,
        })

    @classmethod
    def load(cls, path: str | Path) -> "TransitionResult":
        """Read a result written by :meth:`save` (the derived midpoint fields are recomputed)."""
        raw = results.read(path, cls.KIND, _FILE_KEYS)
        experiment = raw["provenance"].get("settings", {}).get("experiment")
        if experiment != cls.EXPERIMENT:
            reader = {c.EXPERIMENT: c.__name__ for c in TransitionResult.__subclasses__()}
            hint = f"; read it with {reader[experiment]}.load" if experiment in reader else ""
            raise ValueError(f"{path} is not a {cls.KIND}: its settings name the experiment "
                             f"{experiment!r}{hint}")
        return cls(
            d=raw["d"], K=raw["K"], N=raw["N"], model_sizes=raw["model_sizes"],
            times=floats(raw["times"]), memorization_ratio=floats(raw["memorization_ratio"]),
            train_loss=floats(raw["train_loss"]), test_loss=floats(raw["test_loss"]),
            reference=ReferenceLosses.from_json(raw["reference"]),
            learned_var=floats(raw["learned_var"]),
            loss_history=LossHistory.from_json(raw["loss_history"]),
            X=floats(raw["arrays"]["X"]), provenance=raw["provenance"],
            **cls._learned_from_json(raw["arrays"], raw["means_stats"]),
        )


@dataclass(eq=False)
class PhaseTransitionResult(TransitionResult):
    """Everything measured in one phase-transition run of isotropic mixtures
    (:func:`phase_transition`): :class:`TransitionResult` and the learned and true means."""

    true_means: np.ndarray  # (K, d)
    learned_means: list[np.ndarray]  # per size, (M, d)
    means_stats: list[metrics.MeansStatistics]  # per size

    EXPERIMENT, KIND = "phase_transition", "phase-transition result"

    def _learned(self) -> tuple[dict[str, Any], list]:
        return {"learned_means": self.learned_means, "true_means": self.true_means}, self.means_stats

    @classmethod
    def _learned_from_json(cls, arrays: dict[str, Any], stats: list[dict]) -> dict[str, Any]:
        return {"true_means": floats(arrays["true_means"]),
                "learned_means": [floats(m) for m in arrays["learned_means"]],
                "means_stats": [metrics.MeansStatistics(**st) for st in stats]}


@dataclass(eq=False)
class TemplateTransitionResult(TransitionResult):
    """Everything measured in one phase-transition run of coloured-template mixtures
    (:func:`phase_transition_templates`): :class:`TransitionResult` and the learned and true
    templates and colour means; ``learned_var`` is the colour variance."""

    true_templates: np.ndarray  # (K, h, w)
    learned_templates: list[np.ndarray]  # per size, (M, h, w)
    learned_color_means: list[np.ndarray]  # per size, (M, 3)
    template_stats: list[metrics.TemplateStatistics]  # per size

    EXPERIMENT, KIND = "phase_transition_templates", "template phase-transition result"

    def _learned(self) -> tuple[dict[str, Any], list]:
        return ({"learned_templates": self.learned_templates,
                 "learned_color_means": self.learned_color_means,
                 "true_templates": self.true_templates}, self.template_stats)

    @classmethod
    def _learned_from_json(cls, arrays: dict[str, Any], stats: list[dict]) -> dict[str, Any]:
        return {"true_templates": floats(arrays["true_templates"]),
                "learned_templates": [floats(T) for T in arrays["learned_templates"]],
                "learned_color_means": [floats(mu) for mu in arrays["learned_color_means"]],
                "template_stats": [metrics.TemplateStatistics(**st) for st in stats]}


def generate_samples(denoisers, X: torch.Tensor, ev: EvalConfig, seed: int) -> list[torch.Tensor]:
    """``ev.num_samples`` DDIM samples (float64, in the dimension of ``X``) of each denoiser in
    turn, over the 26 times, all from one generator seeded with ``seed + 1``."""
    dev, D = X.device, X.shape[1]
    times = time_grid(dtype=torch.float64)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    return [ddim_sample(den, ev.num_samples, D, times, gen, dtype=torch.float64, device=dev)
            for den in denoisers]


def split_losses(denoisers, X: torch.Tensor, X_test: torch.Tensor, ev: EvalConfig,
                 seed: int) -> dict[str, np.ndarray]:
    """Monte Carlo losses (rows: ``denoisers``, columns: the 26 times) on the training set
    ``X`` and the test set ``X_test``, ``ev.loss_draws`` draws on common noise seeded with
    ``seed + 2`` for each split."""
    times = time_grid(dtype=torch.float64)
    losses = {}
    for split, data in (("train", X), ("test", X_test)):
        gen = torch.Generator(device=data.device).manual_seed(seed + 2)
        losses[split] = mc_losses(denoisers, data, times, ev.loss_draws, gen)[0]
    return losses


def _reference_losses(losses: dict[str, np.ndarray], S: int) -> ReferenceLosses:
    """The reference losses among the (2S + 2, T) loss rows [trained..., pmem..., true, mem]."""
    at = {"pmem": slice(S, 2 * S), "true": 2 * S, "mem": 2 * S + 1}
    return ReferenceLosses(**{f"{name}_{split}": floats(rows[row])
                              for split, rows in losses.items() for name, row in at.items()})


def _measure(trained, truth_denoise, X, X_test, ev: EvalConfig, seed: int):
    """Memorization ratio per size and the Monte Carlo losses on both splits.

    ``trained`` is a :class:`gmmmem.train.TrainedMixtures` or a
    :class:`gmmmem.train_templates.TrainedTemplates` (denoisers on flattened points); ``X`` and
    ``X_test`` are flattened (N, D) float64. Losses have rows [trained sizes, their partially
    memorizing references, the true denoiser, the memorizing one], columns the 26 times.
    """
    sizes = trained.model_sizes
    order = pmem_init_order(X.shape[0], trained.config.seed).to(X.device)

    def point_masses(means):
        return lambda x, t: gmm_denoise(x, t, means, 0.0)

    models = [trained.denoiser(k) for k in range(len(sizes))]
    pmems = [point_masses(X[order[:M]]) for M in sizes]
    refs = [truth_denoise, point_masses(X)]
    ratio = sample_ratios(trained, X, ev, seed)
    return ratio, split_losses(models + pmems + refs, X, X_test, ev, seed)


def make_data(d: int, K: int, N: int, seed: int, device: torch.device, var: float = 1.0):
    """The true mixture, N training points and N test points, all from ``seed`` (float64).

    ``var`` is the true mixture's shared variance s_star^2; the means and the noise
    drawn are the same for every ``var`` (only their scale changes).
    """
    gen = torch.Generator().manual_seed(seed)
    gmm = random_iso_gmm(d, K, var, generator=gen, dtype=torch.float64)
    X, _ = gmm.sample(N, gen)
    X_test, _ = gmm.sample(N, gen)
    return IsoGMM(gmm.means.to(device), var), X.to(device), X_test.to(device)


def make_template_data(K: int, N: int, size: int, seed: int, device: torch.device):
    """The coloured-template mixture of Figures 5-6 and N training and N test images (float64).

    K templates of ``size`` x ``size`` pixels (:func:`gmmmem.templates.load_templates` with
    ``seed``), colours c ~ N(0, I_3) (the paper's setting), images drawn with ``seed``.
    """
    templates = load_templates(K, size, seed=seed, dtype=torch.float64)
    truth = ColoredTemplates(templates, torch.zeros(K, 3, dtype=torch.float64), 1.0)
    gen = torch.Generator().manual_seed(seed)
    X, _ = truth.sample(N, gen)
    X_test, _ = truth.sample(N, gen)
    truth = ColoredTemplates(templates.to(device), truth.color_means.to(device), 1.0)
    return truth, X.to(device), X_test.to(device)


def _model_sizes(model_sizes: Sequence[int] | None, N: int) -> list[int]:
    """Strictly increasing model sizes in 1..N; by default N/10, 2N/10, ..., N."""
    if model_sizes is None:
        model_sizes = sorted({max(1, round(N * k / 10)) for k in range(1, 11)})
    sizes = validate.model_sizes(model_sizes, N)
    if sorted(set(sizes)) != sizes:
        raise ValueError(f"model_sizes must be strictly increasing, got {list(model_sizes)}")
    return sizes


def phase_transition(
    d: int,
    K: int,
    N: int,
    model_sizes: Sequence[int] | None = None,
    scale: str = "default",
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    var: float = 1.0,
    start: str = "pmem",
) -> PhaseTransitionResult:
    """Run the phase-transition experiment for one configuration.

    ``model_sizes`` defaults to N/10, 2N/10, ..., N. ``scale`` picks the training and
    evaluation presets; ``config`` / ``eval_config`` override them. Data, initialization,
    training noise and evaluation noise all derive from ``seed``. ``checkpoint`` (a file,
    written every ``checkpoint_every`` steps) lets an interrupted training resume
    (:func:`gmmmem.train.train_gmm`). ``var`` is the
    true mixture's variance s_star^2 (the paper's 1 by default). ``start``: ``pmem`` (the
    paper's: size M starts on M training points) or ``random`` (means at
    :func:`gmmmem.train.random_start`, a control; recorded in the settings).
    The run is made from :func:`phase_transition_settings`, which it records.
    """
    settings = phase_transition_settings(d, K, N, model_sizes, scale, seed, config=config,
                                         eval_config=eval_config, var=var, start=start)
    d, K, N, var, seed, sizes = (settings[k] for k in ("d", "K", "N", "var", "seed", "model_sizes"))
    config, ev = TrainConfig(**settings["train_config"]), EvalConfig(**settings["eval_config"])
    dev = resolve(device)
    began = time.perf_counter()

    truth, X, X_test = make_data(d, K, N, seed, dev, var)
    init = random_start(X, max(sizes), seed) if start == "random" else None
    trained = train_gmm(X, sizes, config, dev, init_means=init, progress=progress,
                        checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    return measure_phase_transition(trained, truth, X, X_test, ev, seed=seed, scale=scale,
                                    began=began, start=start)


def measure_phase_transition(trained, truth: IsoGMM, X: torch.Tensor, X_test: torch.Tensor,
                             ev: EvalConfig, *, seed: int, scale: str, began: float,
                             start: str = "pmem") -> PhaseTransitionResult:
    """The :class:`PhaseTransitionResult` of the mixtures ``trained`` on ``X``, drawn with
    ``X_test`` from ``truth`` by :func:`make_data` with ``seed``: measured on both with ``ev``
    and the evaluation noise of ``seed``. ``began``: the ``time.perf_counter()`` at which the
    run began (its wall time ends now)."""
    (N, d), K, var = X.shape, truth.K, float(truth.var)
    dev = X.device
    ratio, losses = _measure(trained, truth.denoise, X, X_test, ev, seed)
    stats = [metrics.means_statistics(m.to(dev, torch.float64), truth.means, X) for m in trained.means]
    settings = phase_transition_settings(d, K, N, trained.model_sizes, scale, seed, config=trained.config,
                                         eval_config=ev, var=var, start=start)
    learned = {"true_means": floats(truth.means),
               "learned_means": [floats(m) for m in trained.means], "means_stats": stats}
    return _result(PhaseTransitionResult, d, K, N, trained, ratio, losses, X, learned, settings, ev,
                   dev, began)


def phase_transition_settings(
    d: int,
    K: int,
    N: int,
    model_sizes: Sequence[int] | None = None,
    scale: str = "default",
    seed: int = 0,
    *,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    var: float = 1.0,
    start: str = "pmem",
) -> dict[str, Any]:
    """The settings :func:`phase_transition` records for these arguments (all but the measured
    ``train_seconds``), the arguments checked; nothing is trained."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    d, K, N = validate.integer(d, "d"), validate.integer(K, "K"), validate.training_set(N)
    seed, var = validate.seed(seed), validate.data_variance(var)
    check_scale(scale)
    settings = {"experiment": "phase_transition", "d": d, "K": K, "N": N, "var": var,
                "seed": seed, "scale": scale}
    if start != "pmem":
        settings["start"] = start
    return _trained_settings(settings, _model_sizes(model_sizes, N),
                             config or TrainConfig.preset(scale, seed=seed),
                             eval_config or EVAL_PRESETS[scale])


def _trained_settings(settings: dict, sizes: list[int], config: TrainConfig,
                      ev: EvalConfig) -> dict[str, Any]:
    """``settings`` followed by the model sizes, the training and the evaluation settings."""
    return {**settings, "model_sizes": sizes, "train_config": dataclasses.asdict(config),
            "eval_config": dataclasses.asdict(ev)}


def _result(cls, d, K, N, trained, ratio, losses, X, learned, settings, ev, dev, began,
            snapshots: Snapshots | None = None) -> TransitionResult:
    """The result (a ``cls``) of a trained and measured run, with provenance (``settings``, from
    :func:`phase_transition_settings` or :func:`template_settings`, and the training time);
    ``learned``: the fields of ``cls`` beyond :class:`TransitionResult`'s."""
    config, sizes, S = trained.config, trained.model_sizes, len(trained.model_sizes)
    keep = np.unique(np.linspace(0, config.steps - 1, HISTORY_POINTS).round().astype(int))
    settings = {**settings, "train_seconds": round(trained.seconds, 2)}
    history = LossHistory(
        steps=keep, loss=floats(trained.loss_history[keep]),
        var=None if trained.var_history is None else floats(trained.var_history[keep]),
        snapshots=snapshots,
    )
    return cls(
        d=d, K=K, N=N,
        model_sizes=sizes,
        times=time_grid(dtype=torch.float64).numpy(),
        memorization_ratio=floats(ratio),
        train_loss=floats(losses["train"][:S]),
        test_loss=floats(losses["test"][:S]),
        reference=_reference_losses(losses, S),
        learned_var=floats(trained.var),
        loss_history=history,
        X=floats(X),
        provenance=provenance.record(settings, dev, time.perf_counter() - began),
        **learned,
    )


def template_config(scale: str, **overrides) -> TrainConfig:
    """The training preset of ``scale`` for template models: :data:`gmmmem.presets.TEMPLATE_DRAWS`
    noise draws except at ``paper`` scale; fields overridable (``seed=...``, ``steps=...``). At ``default``
    scale the template model keeps the 30,000-step recipe (:data:`gmmmem.presets.TEMPLATE_DEFAULT`):
    the faster one leaves its training objective 17-30 times the true mixture's (chapter 5)."""
    if check_scale(scale) != "paper":
        long = presets.TEMPLATE_DEFAULT if scale == "default" else {}
        overrides = {**long, "num_draws": presets.TEMPLATE_DRAWS, **overrides}
    return TrainConfig.preset(scale, **overrides)


def phase_transition_templates(
    K: int,
    N: int,
    model_sizes: Sequence[int] | None = None,
    size: int = 15,
    scale: str = "default",
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    progress: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    snapshots: Sequence[int] = (),
) -> TemplateTransitionResult:
    """The phase-transition experiment on coloured templates (Figure 6).

    Data: :func:`make_template_data` (K templates of ``size`` x ``size`` pixels, colours
    N(0, I_3)); models: :func:`gmmmem.train_templates.train_templates`; measured exactly as
    :func:`phase_transition` on the flattened images (D = 3 size^2). Training follows
    :func:`template_config` unless ``config`` is given. Per size,
    ``template_stats`` holds :func:`gmmmem.metrics.template_statistics`. ``snapshots``: training
    steps at which the models are measured too (memorization ratio on the same sampler noise,
    and colour variance), kept in ``loss_history.snapshots`` to show whether the ratio still
    moves at the end of training.
    The run is made from :func:`template_settings`, which it records.
    """
    settings = template_settings(K, N, model_sizes, size, scale, seed, config=config,
                                 eval_config=eval_config, snapshots=snapshots)
    K, N, size, seed, sizes = (settings[k] for k in ("K", "N", "size", "seed", "model_sizes"))
    config, ev = TrainConfig(**settings["train_config"]), EvalConfig(**settings["eval_config"])
    dev = resolve(device)
    began = time.perf_counter()

    truth, images, images_test = make_template_data(K, N, size, seed, dev)
    trained = train_templates(images, sizes, config, dev, progress=progress,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                              snapshots=snapshots)
    X, X_test = images.flatten(1), images_test.flatten(1)

    def true_denoise(x, t):
        return truth.denoise(x.reshape(*x.shape[:-1], *truth.image_shape), t).reshape(x.shape)

    ratio, losses = _measure(trained, true_denoise, X, X_test, ev, seed)
    true_templates = truth.templates.to(dev)
    stats = [metrics.template_statistics(T.to(dev, torch.float64), mu.to(dev, torch.float64),
                                         true_templates, X)
             for T, mu in zip(trained.templates, trained.color_means)]
    learned = {"true_templates": floats(truth.templates),
               "learned_templates": [floats(T) for T in trained.templates],
               "learned_color_means": [floats(mu) for mu in trained.color_means],
               "template_stats": stats}
    steps = sorted(trained.snapshots)
    measured = None
    if steps:
        measured = Snapshots(
            steps=np.array(steps, dtype=np.int64),
            memorization_ratio=floats([sample_ratios(trained.snapshots[s], X, ev, seed) for s in steps]),
            var=floats([trained.snapshots[s].var for s in steps]),
        )
    return _result(TemplateTransitionResult, 3 * size * size, K, N, trained, ratio, losses, X,
                   learned, settings, ev, dev, began, snapshots=measured)


def template_settings(
    K: int,
    N: int,
    model_sizes: Sequence[int] | None = None,
    size: int = 15,
    scale: str = "default",
    seed: int = 0,
    *,
    config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    snapshots: Sequence[int] = (),
) -> dict[str, Any]:
    """The settings :func:`phase_transition_templates` records for these arguments (all but the
    measured ``train_seconds``), the arguments checked; nothing is trained."""
    K, N, size = validate.integer(K, "K"), validate.training_set(N), validate.integer(size, "size")
    seed = validate.seed(seed)
    check_scale(scale)
    settings = {"experiment": "phase_transition_templates", "K": K, "N": N, "size": size,
                "color_var": 1.0, "template_source": "digits", "seed": seed, "scale": scale}
    steps = sorted({validate.positive_int(s, "snapshot step") for s in snapshots})
    if steps:
        settings["snapshots"] = steps
    return _trained_settings(settings, _model_sizes(model_sizes, N),
                             config or template_config(scale, seed=seed),
                             eval_config or EVAL_PRESETS[scale])


def sample_ratios(trained, X: torch.Tensor, ev: EvalConfig, seed: int) -> list[float]:
    """The memorization ratio of each size of ``trained`` (its DDIM samples, drawn with the
    sampler noise of ``seed``: the same for the final models and their snapshots)."""
    models = [trained.denoiser(k) for k in range(len(trained.model_sizes))]
    return [metrics.memorization_ratio(x, X) for x in generate_samples(models, X, ev, seed)]
