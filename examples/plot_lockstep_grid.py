"""
=================================================
A grid search that trains its candidates together
=================================================

:class:`~skdynloss.LockstepGridSearchCV` is scikit-learn's
:class:`~sklearn.model_selection.GridSearchCV` with one difference: the fits of
candidates and folds that differ only in what can be stacked (``amplitude``,
``period``, ``shape``, ``order``, ``static_last_period``, the base ``loss``,
``random_state`` and the fold's rows) are trained together, as one network whose
parameters are the models' parameters stacked. Every model of the stack computes what
its own fit computes, so the cross-validation scores are GridSearchCV's; only the time
differs.

Here a 4 x 4 grid of amplitudes and periods on the paper's spiral, with 3 folds: 48
full-batch fits, trained as one stack, and the same search by
GridSearchCV for comparison.
"""

# %%
# Both searches
# -------------
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skdynloss import DynamicalLossClassifier, LockstepGridSearchCV, make_spiral

torch.set_num_threads(1)
X, y = make_spiral()
clf = DynamicalLossClassifier(
    hidden_layer_sizes=(32,),
    optimizer="adam",
    lr=0.03,
    batch_size=-1,  # full batch, in float64, as in the paper
    dtype="float64",
    max_epochs=200,
    compute_sharpness=False,  # the search does not need it
    random_state=0,
)
grid = {"amplitude": [1, 2, 5, 20], "period": [1, 2, 5, 10]}
cv = StratifiedKFold(3, shuffle=True, random_state=0)

# torch's first optimizer step imports its compiler (seconds, once per process): take
# it out of both timings.
DynamicalLossClassifier(max_epochs=1, hidden_layer_sizes=(2,)).fit(X[::30], y[::30])

times = {}
searches = {}
for name, search_cls in (
    ("LockstepGridSearchCV", LockstepGridSearchCV),
    ("GridSearchCV", GridSearchCV),
):
    start = time.perf_counter()
    searches[name] = search_cls(clf, grid, cv=cv).fit(X, y)
    times[name] = time.perf_counter() - start
lockstep, reference = searches["LockstepGridSearchCV"], searches["GridSearchCV"]

same = np.allclose(
    lockstep.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"]
)
print(f"the same mean CV scores as GridSearchCV: {same}")
for name, seconds in times.items():
    print(f"{name:>22}: {seconds:.1f} s")
print(
    "largest score difference:",
    np.abs(
        lockstep.cv_results_["mean_test_score"]
        - reference.cv_results_["mean_test_score"]
    ).max(),
)
print("best parameters:", lockstep.best_params_)

# %%
# The CV score as a heat map
# --------------------------
# Rows are amplitudes (``amplitude=1`` is plain cross-entropy, whose period has no
# effect), columns periods in epochs. In full batch the clock ticks once per epoch, so
# ``period=1`` samples the triangle at its start only, where the weight is 1: plain
# cross-entropy too. In this short training (200 epochs) the tilt costs accuracy.
results = lockstep.cv_results_
amplitudes, periods = grid["amplitude"], grid["period"]
score = np.empty((len(amplitudes), len(periods)))
for a, p, m in zip(
    results["param_amplitude"],
    results["param_period"],
    results["mean_test_score"],
    strict=True,
):
    score[amplitudes.index(a), periods.index(p)] = m

fig, (ax, bar) = plt.subplots(
    1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [3, 2]}
)
image = ax.imshow(score, cmap="viridis", origin="lower")
ax.set_xticks(range(len(periods)), [str(p) for p in periods])
ax.set_yticks(range(len(amplitudes)), [str(a) for a in amplitudes])
ax.set_xlabel("period (epochs)")
ax.set_ylabel("amplitude")
ax.set_title("mean CV accuracy")
for i in range(len(amplitudes)):
    for j in range(len(periods)):
        ax.text(j, i, f"{score[i, j]:.2f}", ha="center", va="center", color="w")
fig.colorbar(image, ax=ax, shrink=0.8)

names = list(times)
bar.barh(names, [times[n] for n in names], color=["tab:green", "tab:gray"])
bar.set_xlabel("seconds for 48 fits (one thread)")
bar.set_title(f"{times['GridSearchCV'] / times['LockstepGridSearchCV']:.1f}x faster")
fig.tight_layout()
plt.show()
