"""
==========================================
Comparison with scikit-learn's classifiers
==========================================

How does a network trained with a dynamical loss compare with the same network
trained with plain cross-entropy (``amplitude=1``), with scikit-learn's
:class:`~sklearn.neural_network.MLPClassifier` and with
:class:`~sklearn.linear_model.LogisticRegression`? This example runs the held-out half
of ``skdynloss demo``, :func:`skdynloss.experiments.digits_comparison`: all four fit the
training part of the digits data set and are scored on the held-out part, whatever it
turns out to be.

One split and one seed make a quick illustration, not a benchmark: differences of a
few test samples are within the noise of the split and of the initialisation. To
compare methods seriously, repeat over seeds and splits (for example with
:func:`~sklearn.model_selection.cross_val_score`) and tune each method's
hyperparameters in the same way.
"""

# %%
# Fit and score
# -------------
# All models see the same standardised features (a Pipeline of
# :class:`~sklearn.preprocessing.StandardScaler` and the model). The two networks of
# this package and scikit-learn's MLP share one hidden layer of 100 units, the Adam
# optimizer and its learning rate; the package's networks train for 60 epochs in
# mini-batches of 64, and the dynamical loss moves its focus to the next class every
# ``period=3`` epochs. The settings are :data:`skdynloss.experiments.DIGITS`.
import textwrap

import matplotlib.pyplot as plt
import numpy as np

from skdynloss.experiments import DIGITS, digits_comparison

result = digits_comparison(config=DIGITS, seed=0)
for model in result.models:
    print(
        f"{model.name:48s} test accuracy {model.test_accuracy:.4f}  "
        f"(fit {model.fit_time:.1f} s)"
    )
print(textwrap.fill(result.conclusion, 88))

# %%
# The conclusion compares the two losses on the *same* test images: the exact McNemar
# test looks only at the images that one of them got right and the other wrong, and
# asks how lopsided that split is.
n_dyn_only, n_ce_only, p_value = result.mcnemar
print(
    f"right only with the dynamical loss: {n_dyn_only}; only with cross-entropy: "
    f"{n_ce_only}; p = {p_value:.2f}"
)

# %%
# The test accuracies
# -------------------
# Each bar is annotated with its accuracy and the number of misclassified test
# samples, out of ``result.n_test``. The axis does not start at zero, which magnifies
# the differences: compare the counts of errors too. The two losses keep the colours
# they have in every figure of :mod:`skdynloss.plotting`.
from skdynloss.plotting import CROSS_ENTROPY_COLOR, DYNAMICAL_COLOR  # noqa: E402

amp, per = DIGITS["amplitude"], DIGITS["period"]
labels = ["cross-entropy\n(A=1)", f"dynamical loss\n(A={amp:g}, T={per:g})"]
labels += ["MLPClassifier", "LogisticRegression"]
values = np.array([m.test_accuracy for m in result.models])
fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
bars = ax.bar(labels, values, color=[CROSS_ENTROPY_COLOR, DYNAMICAL_COLOR, "C0", "C2"])
for bar, model in zip(bars, result.models, strict=True):
    n_wrong = int((~model.test_correct).sum())
    ax.annotate(
        f"{model.test_accuracy:.3f}\n({n_wrong} wrong)",
        (bar.get_x() + bar.get_width() / 2, model.test_accuracy),
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
ax.set_title(f"Digits: {result.n_train} training and {result.n_test} test samples")
plt.show()
