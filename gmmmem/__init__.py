"""gmmmem: the laboratory of "On the Edge of Memorization in Diffusion Models".

Modules
-------
diffusion   the variance-preserving schedule alpha_t, sigma_t and the time grid
mixtures    isotropic Gaussian mixtures and their exact posterior-mean denoisers
losses      Monte Carlo denoising losses and the closed forms of Theorems 3.1/3.2
config      the scale (ci / default / paper) a chapter or command runs at
device      the torch device computations run on
"""

__version__ = "0.1.0"
