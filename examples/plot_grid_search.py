"""
==========================================
Tuning amplitude and period by grid search
==========================================

:class:`~skdynloss.DynamicalLossClassifier` is an ordinary scikit-learn estimator, so
its two new hyperparameters, the ``amplitude`` A of the tilt and the ``period`` T spent
on each class, are tuned like any other: inside a
:class:`~sklearn.pipeline.Pipeline` (so that the scaler is fitted on the training folds
only) with :class:`~sklearn.model_selection.GridSearchCV`.

``period`` is measured in epochs, not optimizer steps, so the same value means the
same thing in every fold even though fold sizes, and hence the number of steps per
epoch, differ. ``amplitude=1`` is plain cross-entropy, the baseline row of the grid.
Keep ``max_epochs`` at several times ``n_classes * period`` so that every class gets
the focus more than once; with ``static_last_period=True`` (the default) the last
``period`` epochs are trained with plain cross-entropy.
"""

# %%
# The search
# ----------
# The wine data set (178 samples, 13 features, 3 classes) ships with scikit-learn.
# ``compute_sharpness=False`` skips the Hessian computation after each fit, which the
# search does not need.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_wine
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skdynloss import DynamicalLossClassifier

X, y = load_wine(return_X_y=True)

pipe = Pipeline(
    [
        ("scale", StandardScaler()),
        (
            "clf",
            DynamicalLossClassifier(
                hidden_layer_sizes=(32,),
                lr=1e-3,
                batch_size=32,
                max_epochs=60,
                compute_sharpness=False,
                random_state=0,
            ),
        ),
    ]
)
param_grid = {
    "clf__amplitude": [1, 5, 20, 70],
    "clf__period": [1, 3, 10],
}
search = GridSearchCV(
    pipe, param_grid, cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
)
search.fit(X, y)
print("best parameters:", search.best_params_)
print(f"best mean CV accuracy: {search.best_score_:.3f}")

# %%
# The cross-validation scores as a heat map
# -----------------------------------------
# Rows are amplitudes, columns periods; each cell is the mean accuracy over the three
# test folds (and its standard deviation). The first row, ``amplitude=1``, is plain
# cross-entropy, whose period has no effect.
amplitudes = param_grid["clf__amplitude"]
periods = param_grid["clf__period"]
results = search.cv_results_
mean = np.empty((len(amplitudes), len(periods)))
std = np.empty_like(mean)
for a, p, m, s in zip(
    results["param_clf__amplitude"],
    results["param_clf__period"],
    results["mean_test_score"],
    results["std_test_score"],
    strict=True,
):
    mean[amplitudes.index(a), periods.index(p)] = m
    std[amplitudes.index(a), periods.index(p)] = s

fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
image = ax.imshow(mean, cmap="viridis", aspect="auto")
for i in range(len(amplitudes)):
    for j in range(len(periods)):
        ax.text(
            j,
            i,
            f"{mean[i, j]:.3f}\n± {std[i, j]:.3f}",
            ha="center",
            va="center",
            color="w" if mean[i, j] < mean.min() + 0.6 * np.ptp(mean) else "k",
            fontsize="small",
        )
ax.set_xticks(range(len(periods)), [f"{p:g}" for p in periods])
ax.set_yticks(range(len(amplitudes)), [f"{a:g}" for a in amplitudes])
ax.set_xlabel("period T (epochs)")
ax.set_ylabel("amplitude A")
ax.set_title("Mean 3-fold CV accuracy on wine")
fig.colorbar(image, ax=ax, label="mean accuracy")
plt.show()

# %%
# With 3 folds of about 60 test samples each, one misclassified sample moves a fold's
# accuracy by almost 0.02: read differences smaller than the standard deviations as
# noise. The best pipeline is refitted on all the data and used like any classifier:
print(search.best_estimator_.predict(X[:5]), y[:5])
