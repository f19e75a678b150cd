"""gmmmem: the laboratory of "On the Edge of Memorization in Diffusion Models".

The package is flat. Its modules, grouped by what they do:

Shared core
    diffusion      the variance-preserving schedule alpha_t, sigma_t and the 26-time grid
    sampling       the DDIM (and DDPM) sampler
    metrics        the memorization ratio and where learned means sit
    train          the training loop shared by every model (loss, Adam, schedule, checkpoints),
                   and the isotropic mixtures' state and gradient, all model sizes at once
    train_many     the same for several configurations (d, N, seed) in one batched step
    results        typed parts of a result (reference losses, loss history); its JSON file
    presets        every training recipe, evaluation setting and grid, in one place
    provenance, files, validate, device, config
                   what a result records; atomic files; argument checks; torch devices;
                   the scale (ci / default / paper) a chapter or command runs at

Model families (denoiser, trainable state, gradient)
    mixtures       isotropic Gaussian mixtures and their exact posterior-mean denoiser
                   (trained by train)
    templates      coloured templates (image-like, low-rank data) and their exact denoiser
    train_templates   the template mixtures' state and hand-written gradient
    networks       a time-conditioned MLP denoiser, trained by the same loop

Theory (no training)
    losses         Monte Carlo losses, Theorems 3.1/3.2, the finite-size losses, the crossover
    weights        the simplex least squares that fit the time weights lambda_t
    predictors     predictors of M_pt/N (closed form, Monte Carlo, finite size, baselines)
    heldout        held-out evaluation of any predictor (random and grouped splits)
    predict        the predicted memorization threshold of a configuration, before training
    finite_size    the committed finite-size check and held-out evaluations (chapter 6), typed
    null_model     the singleton-cell null model of the partially memorizing start
    convergence    the gradient on the log variance at the start (why training is slow)

Experiments (train, measure, save)
    experiments    the phase transition of one configuration (Figure 2; Figure 6 on templates)
    sweep          phase transitions over a grid (Figure 3): two-stage search, on Dask or batched
    width_sweep    MLP denoisers of growing width (chapter 7)
    data_size      fixed model size, growing training set (chapter 9)
    agreement      whether two runs of one configuration agree within sampling noise
    benchmark      the trainers' speed files (benchmarks/train.py), typed

The book's helpers: report (claims and tables), plots. The command line: ``python -m gmmmem``.
"""

__version__ = "0.1.0"
