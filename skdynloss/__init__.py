"""skdynloss: dynamical loss functions for scikit-learn classifiers.

Implements the dynamical loss functions of Ruiz-Garcia, Zhang, Schoenholz and Liu,
"Tilting the playing field: Dynamical loss functions for machine learning" (ICML 2021,
arXiv:2102.03793) as a scikit-learn classifier on skorch and PyTorch, with the tools to
measure the loss landscape (Hessian and NTK spectra) the paper's explanation rests on.
"""

from importlib.metadata import PackageNotFoundError, version

from ._classifier import DynamicalLossClassifier
from ._lockstep import fit_lockstep
from ._losses import DynamicalCrossEntropy, DynamicalLoss, dynamical_loss
from ._persistence import load, save
from ._schedules import class_weights
from ._search import (
    LockstepGridSearchCV,
    LockstepHalvingGridSearchCV,
    LockstepHalvingRandomSearchCV,
    LockstepRandomizedSearchCV,
)
from ._sharpness import (
    EigenResult,
    hessian_eigenvalues,
    hessian_operator,
    ntk_eigenvalues,
    top_eigenvalues,
)
from .datasets import make_spiral

try:
    __version__ = version("skdynloss")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "DynamicalCrossEntropy",
    "DynamicalLoss",
    "DynamicalLossClassifier",
    "EigenResult",
    "LockstepGridSearchCV",
    "LockstepHalvingGridSearchCV",
    "LockstepHalvingRandomSearchCV",
    "LockstepRandomizedSearchCV",
    "class_weights",
    "dynamical_loss",
    "fit_lockstep",
    "hessian_eigenvalues",
    "hessian_operator",
    "load",
    "make_spiral",
    "ntk_eigenvalues",
    "save",
    "top_eigenvalues",
    "__version__",
]
