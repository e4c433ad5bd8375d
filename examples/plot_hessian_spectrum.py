"""
========================================================
Hessian and neural-tangent-kernel spectra of fitted nets
========================================================

The paper's explanation of dynamical loss functions is geometric: the oscillating
weights push gradient descent out of narrow valleys of the loss landscape into wider,
flatter ones. Two spectra measure that geometry at the fitted parameters:

* the top eigenvalues of the **Hessian** of the loss with respect to all trainable
  parameters (the largest one is the *sharpness*), computed by
  :func:`~skdynloss.hessian_eigenvalues` with Lanczos on exact Hessian-vector
  products;
* the eigenvalues of the empirical **neural tangent kernel**
  :math:`\\Theta = J J^\\top`, with :math:`J` the Jacobian of the network's outputs on
  the data with respect to its parameters, computed by
  :func:`~skdynloss.ntk_eigenvalues`.

Both functions take any :class:`torch.nn.Module`, here the ``module_`` of two fitted
classifiers: one trained with plain cross-entropy (``amplitude=1``) and one with a
dynamical loss, on the spiral data with full-batch gradient descent. The runs are far
shorter than the paper's, so read the figure as a demonstration of the tools rather
than as a reproduction of its results.
"""

# %%
# Two fits that differ only in the loss
# -------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch.nn.functional as F

from skdynloss import (
    DynamicalLossClassifier,
    hessian_eigenvalues,
    make_spiral,
    ntk_eigenvalues,
)

X, y = make_spiral(random_state=0)

common = {
    "hidden_layer_sizes": (100,),
    "optimizer": "sgd",
    "momentum": 0.0,
    "lr": 1.0,
    "batch_size": -1,
    "max_epochs": 1000,
    "dtype": "float64",
    "random_state": 0,
}
fits = {
    "cross-entropy (A=1)": DynamicalLossClassifier(amplitude=1, **common).fit(X, y),
    "dynamical (A=70, T=100)": DynamicalLossClassifier(
        amplitude=70, period=100, **common
    ).fit(X, y),
}

# %%
# The spectra
# -----------
# ``hessian_eigenvalues`` needs the network, a *mean* loss and the data. The labels
# given to the loss are class indices, i.e. positions in ``classes_``; for
# ``make_spiral`` they already are. The Hessian is that of plain (unweighted)
# cross-entropy, the quantity reported as ``sharpness_``, so the two fits are
# compared on the same landscape.
hessian, ntk = {}, {}
for name, clf in fits.items():
    targets = np.searchsorted(clf.classes_, y)
    result = hessian_eigenvalues(clf.module_, F.cross_entropy, X, targets, k=5)
    hessian[name] = result.eigenvalues
    ntk[name] = ntk_eigenvalues(clf.module_, X)
    print(
        f"{name}: train acc {clf.score(X, y):.3f}, top NTK {ntk[name][0]:.1f}\n"
        f"  top-5 Hessian {np.round(result.eigenvalues, 3)}\n"
        f"  (sharpness_ {clf.sharpness_:.3f}, converged {result.converged}, "
        f"{result.n_matvec} Hessian-vector products)"
    )

fig, (ax_h, ax_k) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for (name, values), marker in zip(hessian.items(), "os", strict=True):
    ax_h.plot(np.arange(1, len(values) + 1), values, marker=marker, label=name)
ax_h.axhline(2 / common["lr"], color="k", ls=":", label="2 / lr")
ax_h.set(
    xlabel="index i",
    ylabel=r"Hessian eigenvalue $\lambda_i$",
    title="Top 5 Hessian eigenvalues of cross-entropy",
    xticks=range(1, 6),
)
ax_h.legend()

n_show = 60
for name, values in ntk.items():
    ax_k.semilogy(np.arange(1, n_show + 1), values[:n_show], ".-", label=name)
ax_k.set(
    xlabel="index i",
    ylabel="NTK eigenvalue",
    title=f"Top {n_show} eigenvalues of the empirical NTK",
)
ax_k.legend()
plt.show()

# %%
# The kernel has ``n_samples * n_classes`` eigenvalues (here 900), of which at most
# ``n_params`` are non-zero. In the linearised (neural-tangent) picture of training, its
# largest eigenvalue sets the fastest time scale on which the network's outputs move;
# the Hessian's largest eigenvalue is the one that gradient descent must keep below
# ``2 / lr`` to be stable.
n_params = sum(p.numel() for p in fits["cross-entropy (A=1)"].module_.parameters())
print(f"{n_params} parameters; NTK of size {len(ntk['cross-entropy (A=1)'])}")
