"""gmmmem: the laboratory of "On the Edge of Memorization in Diffusion Models".

Modules
-------
diffusion    the variance-preserving schedule alpha_t, sigma_t and the time grid
mixtures     isotropic Gaussian mixtures and their exact posterior-mean denoisers
templates    coloured templates (image-like, low-rank data) and their exact denoiser
losses       Monte Carlo denoising losses, the closed forms of Theorems 3.1/3.2, where they cross
train        gradient training of mixture denoisers, all model sizes at once
train_templates  gradient training of coloured-template mixtures
sampling     the DDIM (and DDPM) sampler
metrics      the memorization ratio and where learned means sit
experiments  the phase-transition experiment (Figure 2) and its results
results      typed parts of the results (reference losses, loss history); their JSON files
sweep        phase transitions over a grid of configurations, on Dask
weights      the solvers that fit the time weights lambda_t
predictors   predictors of the transition (closed form, finite size, Monte Carlo, baselines)
heldout      held-out evaluation of the predictors
predict      the predicted memorization threshold of a configuration, before training
data_size    the transition along the other axis: fixed model size, growing training set
null_model   the singleton-cell null model of the partially memorizing start
networks     a time-conditioned MLP denoiser trained like the mixtures; the width sweep
provenance   what a result file records about how it was made
config       the scale (ci / default / paper) a chapter or command runs at
device       the torch device computations run on
"""

__version__ = "0.1.0"
