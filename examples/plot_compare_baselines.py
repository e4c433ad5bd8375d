"""
==========================================
Comparison with scikit-learn's classifiers
==========================================

How does a network trained with a dynamical loss compare with the same network
trained with plain cross-entropy (``amplitude=1``), with scikit-learn's
:class:`~sklearn.neural_network.MLPClassifier` and with
:class:`~sklearn.linear_model.LogisticRegression`? This example fits all four on the
training part of the digits data set and reports their accuracy on the held-out part,
whatever it turns out to be.

One split and one seed make a quick illustration, not a benchmark: differences of a
few test samples are within the noise of the split and of the initialisation. To
compare methods seriously, repeat over seeds and splits (for example with
:func:`~sklearn.model_selection.cross_val_score`) and tune each method's
hyperparameters in the same way.
"""

# %%
# Data and models
# ---------------
# All models see the same standardised features. The two networks of this package and
# scikit-learn's MLP share one hidden layer of 100 units, the Adam optimizer, its
# learning rate and the mini-batch size.
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdynloss import DynamicalLossClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)

network = {
    "hidden_layer_sizes": (100,),
    "lr": 1e-3,
    "batch_size": 64,
    "max_epochs": 60,
    "compute_sharpness": False,
    "random_state": 0,
}
models = {
    "dynamical loss\n(A=10, T=2)": DynamicalLossClassifier(
        amplitude=10, period=2, **network
    ),
    "cross-entropy\n(A=1)": DynamicalLossClassifier(amplitude=1, **network),
    "MLPClassifier": MLPClassifier(
        hidden_layer_sizes=(100,),
        learning_rate_init=1e-3,
        batch_size=64,
        max_iter=60,
        random_state=0,
    ),
    "LogisticRegression": LogisticRegression(max_iter=2000),
}

# %%
# Fit and score
# -------------
# With ten classes and ``period=2`` the focus visits every class once every 20
# epochs, three times in the 60 epochs; the last two epochs use plain cross-entropy.
scores, times = {}, {}
for name, model in models.items():
    pipe = make_pipeline(StandardScaler(), model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # MLPClassifier warns when it stops at max_iter: the budget of 60 epochs, the
        # same as that of the other networks, is deliberate here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X_train, y_train)
    times[name] = time.perf_counter() - start
    scores[name] = pipe.score(X_test, y_test)
    label = name.replace("\n", " ")
    print(f"{label:32s} test accuracy {scores[name]:.4f}  (fit {times[name]:.1f} s)")

# %%
# The test accuracies
# -------------------
# Each bar is annotated with its accuracy and the number of misclassified test
# samples, out of ``len(y_test)``. The axis does not start at zero, which magnifies
# the differences: compare the counts of errors too.
fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
names = list(scores)
values = np.array([scores[n] for n in names])
bars = ax.bar(names, values, color=["C0", "C1", "C2", "C7"])
for bar, value in zip(bars, values, strict=True):
    n_wrong = round((1 - value) * len(y_test))
    ax.annotate(
        f"{value:.3f}\n({n_wrong} wrong)",
        (bar.get_x() + bar.get_width() / 2, value),
        xytext=(0, -4),
        textcoords="offset points",
        ha="center",
        va="top",
        color="w",
        fontweight="bold",
        fontsize="small",
    )
ax.set_ylim(max(0.0, values.min() - 0.05), 1.0)
ax.set_ylabel("test accuracy")
ax.set_title(f"Digits: {len(y_train)} training and {len(y_test)} test samples")
plt.show()
