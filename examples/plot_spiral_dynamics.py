"""
=================================================
Training dynamics on the spiral (Fig. 4 in small)
=================================================

Ruiz-Garcia et al. (2021) explain why dynamical loss functions help with the curvature
of the loss landscape. They train a small network on three interleaved spirals with
full-batch gradient descent and follow, step by step, the class weights, the loss, its
change from one step to the next, the training accuracy, and the largest eigenvalue of
the Hessian of the loss (the *sharpness*). Gradient descent with learning rate ``lr`` is
stable only where the sharpness stays below ``2 / lr``: when the tilted landscape
narrows late in a period, the sharpness crosses that line and the dynamics become
unstable (oscillations in :math:`F(t) - F(t-1)`), until the weights relax again.

This example runs the same experiment in miniature: the paper's data, network and
learning rate, but a period of 200 instead of 5000 steps and 3000 steps instead of
70 000, so that it runs in seconds. It shows the mechanism, not the paper's final
accuracies, which need the full-length run.
"""

# %%
# Data and estimator
# ------------------
# The paper's setting is plain full-batch gradient descent: ``optimizer="sgd"``,
# ``momentum=0`` and ``batch_size=-1``, so that one epoch is one gradient step and
# ``period`` counts steps. ``sharpness_every=20`` records the top Hessian eigenvalue
# (Lanczos on Hessian-vector products) every 20 steps in ``sharpness_history_``.
import matplotlib.pyplot as plt

from skdynloss import DynamicalLossClassifier, make_spiral
from skdynloss.plotting import plot_decision_boundary, plot_training_dynamics

X, y = make_spiral(n_samples_per_class=100, n_classes=3, random_state=0)

clf = DynamicalLossClassifier(
    amplitude=70,
    period=200,
    hidden_layer_sizes=(100,),
    optimizer="sgd",
    momentum=0.0,
    lr=1.0,
    batch_size=-1,
    max_epochs=3000,
    dtype="float64",
    sharpness_every=20,
    random_state=0,
)
clf.fit(X, y)
print(f"training accuracy after {clf.n_iter_} steps: {clf.score(X, y):.3f}")
print(f"final sharpness of cross-entropy: {clf.sharpness_:.3f}; 2/lr = {2 / clf.lr:g}")

# %%
# The dynamics
# ------------
# :func:`~skdynloss.plotting.plot_training_dynamics` draws the rows of the paper's
# Fig. 4 from ``clf.dynamics_`` and ``clf.sharpness_history_``. The last period is
# trained with plain cross-entropy (``static_last_period=True``), as in the paper.
fig = plot_training_dynamics(clf, figsize=(9, 11))
plt.show()

# %%
# How often, and by how much, does the sharpness of the loss being minimised exceed
# the stability threshold?
history = clf.sharpness_history_
above = history["dynamical"] > history["threshold"]
print(
    f"sharpness of F above 2/lr at {above.sum()} of {above.size} measurements; "
    f"largest value {history['dynamical'].max():.3f}"
)

# %%
# The fitted decision regions
# ---------------------------
fig = plot_decision_boundary(clf, X, y)
plt.show()
