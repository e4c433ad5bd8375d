"""
=======================================================
A randomized search that trains its candidates together
=======================================================

:class:`~skdynloss.LockstepRandomizedSearchCV` is scikit-learn's
:class:`~sklearn.model_selection.RandomizedSearchCV`: the same constructor, the same
sampled candidates (``param_distributions`` may hold scipy.stats distributions), the
same ``cv_results_``. Only the fits differ: candidates and folds that differ only in
what can be stacked (``amplitude``, ``period``, ``random_state``, the fold's rows, ...)
are trained together, as stacked networks.

Here 16 candidates on scikit-learn's digits: the amplitude drawn log-uniformly between
1 (plain cross-entropy) and 50, the period uniformly between 0.5 and 5 epochs, and the
learning rate from a scipy.stats discrete distribution over three values. Candidates
that share a learning rate share their stacks; a learning rate drawn from a continuous
distribution would make every candidate a group of its own (its folds still train
together, but the candidates one after another).
"""

# %%
# Both searches
# -------------
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import loguniform, rv_discrete, uniform
from sklearn.datasets import load_digits
from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

from skdynloss import DynamicalLossClassifier, LockstepRandomizedSearchCV

torch.set_num_threads(1)
X, y = load_digits(return_X_y=True)
X = X / 16.0
clf = DynamicalLossClassifier(
    hidden_layer_sizes=(32,),
    optimizer="adam",
    batch_size=64,
    max_epochs=5,
    compute_sharpness=False,  # the search does not need it
    random_state=0,
)
rates = [1e-3, 3e-3, 1e-2]
space = {
    "amplitude": loguniform(1, 50),
    "period": uniform(0.5, 4.5),
    "lr": rv_discrete(values=(rates, [1 / 3] * 3)),
}
kwargs = dict(n_iter=16, cv=StratifiedKFold(3, shuffle=True, random_state=0),
              random_state=0)  # fmt: skip

# torch's first optimizer step imports its compiler (seconds, once per process): take
# it out of both timings.
DynamicalLossClassifier(max_epochs=1, hidden_layer_sizes=(2,)).fit(X[::30], y[::30])

times, searches = {}, {}
for name, search_cls in (
    ("LockstepRandomizedSearchCV", LockstepRandomizedSearchCV),
    ("RandomizedSearchCV", RandomizedSearchCV),
):
    start = time.perf_counter()
    searches[name] = search_cls(clf, space, **kwargs).fit(X, y)
    times[name] = time.perf_counter() - start
lockstep = searches["LockstepRandomizedSearchCV"]
reference = searches["RandomizedSearchCV"]

difference = np.abs(
    lockstep.cv_results_["mean_test_score"] - reference.cv_results_["mean_test_score"]
).max()
same = lockstep.cv_results_["params"] == reference.cv_results_["params"]
print("the same candidates:", same)
print(f"largest difference of the mean CV scores: {difference:.2g}")
for name, seconds in times.items():
    print(f"{name:>26}: {seconds:.1f} s")
best = ", ".join(f"{k} {float(v):.3g}" for k, v in lockstep.best_params_.items())
print("best parameters:", best)

# %%
# The CV score against amplitude and period
# -----------------------------------------
# Each point is a candidate, coloured by its learning rate. In so short a training
# (5 epochs of Adam) the learning rate decides most of the score; amplitude and period
# move it by a few points, most at the smallest learning rate, where the network is
# still far from trained.
results = lockstep.cv_results_
amplitude = np.asarray(results["param_amplitude"], dtype=float)
period = np.asarray(results["param_period"], dtype=float)
lr = np.asarray(results["param_lr"], dtype=float)
score = results["mean_test_score"]
colors = {
    r: c for r, c in zip(rates, ["tab:blue", "tab:orange", "tab:red"], strict=True)
}

fig, (left, middle, right) = plt.subplots(
    1, 3, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 3, 2]}
)
for r in rates:
    mine = lr == r
    left.scatter(amplitude[mine], score[mine], color=colors[r], label=f"lr = {r:g}")
    middle.scatter(period[mine], score[mine], color=colors[r])
left.set_xscale("log")
left.set_xticks([1, 2, 5, 10, 20, 50], ["1", "2", "5", "10", "20", "50"])
left.minorticks_off()
left.set_xlabel("amplitude")
left.set_ylabel("mean CV accuracy")
left.legend(loc="lower left")
middle.set_xlabel("period (epochs)")
for ax in (left, middle):
    ax.grid(alpha=0.3)
names = list(times)
right.barh(
    ["Lockstep", "RandomizedSearchCV"],
    [times[n] for n in names],
    color=["tab:green", "tab:gray"],
)
right.set_xlabel(f"seconds for {len(score) * 3} fits (one thread)")
right.set_title(f"{times['RandomizedSearchCV'] / times[names[0]]:.1f}x faster")
fig.tight_layout()
plt.show()
