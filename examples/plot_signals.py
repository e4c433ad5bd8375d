"""
====================================
Signals: a 1-D convolutional network
====================================

When each row of ``X`` is a signal (a spectrum, a time series, a sensor trace), its
features are samples in order, and what tells the classes apart is a local shape
that may occur anywhere along the row. ``module="cnn1d"`` trains a small 1-D
convolutional network on such rows: two convolution blocks slide the same filters
along the signal, and an average over stretches of it feeds a dense head.

This example makes noisy sine, square and sawtooth waves of random frequency and
phase, and compares the 1-D CNN with the default MLP, both trained with the
dynamical loss.
"""

# %%
# The signals
# -----------
# Every row holds 128 samples of one wave: 2 to 6 cycles, a random phase, and
# Gaussian noise of standard deviation 0.6. The frequency and the phase change from
# row to row, so no single sample position tells the wave forms apart.
import time

import matplotlib.pyplot as plt
import numpy as np
from scipy import signal
from sklearn.model_selection import train_test_split

from skdynloss import DynamicalLossClassifier

NAMES = ["sine", "square", "sawtooth"]


def make_waves(n_per_class=200, length=128, noise=0.6, random_state=0):
    rng = np.random.default_rng(random_state)
    t = np.linspace(0, 1, length, endpoint=False)
    X, y = [], []
    for label, name in enumerate(NAMES):
        for _ in range(n_per_class):
            phase = 2 * np.pi * (rng.uniform(2, 6) * t + rng.uniform())
            wave = {
                "sine": np.sin(phase),
                "square": signal.square(phase),
                "sawtooth": signal.sawtooth(phase),
            }[name]
            X.append(wave + noise * rng.standard_normal(length))
            y.append(label)
    return np.asarray(X, dtype=np.float32), np.asarray(y)


X, y = make_waves()
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.5, stratify=y, random_state=0
)

fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True, layout="constrained")
for label, ax in enumerate(axes):
    for row in X_train[y_train == label][:2]:
        ax.plot(row, lw=0.8)
    ax.set_title(NAMES[label])
    ax.set_xlabel("sample")
axes[0].set_ylabel("value")
plt.show()

# %%
# Two networks, one loss
# ----------------------
# Both train for 40 epochs with the dynamical loss (amplitude 5, the period chosen
# by ``period="auto"``). The MLP sees the 128 samples as 128 unrelated features; the
# 1-D CNN reads them as one signal (``signal_channels=1``, the default; a row of
# several channels holds them one after the other).
models = {
    "MLP (module='mlp')": DynamicalLossClassifier(
        amplitude=5, max_epochs=40, random_state=0
    ),
    "1-D CNN (module='cnn1d')": DynamicalLossClassifier(
        module="cnn1d", amplitude=5, max_epochs=40, random_state=0
    ),
}
scores = {}
for name, clf in models.items():
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    scores[name] = clf.score(X_test, y_test)
    print(
        f"{name:26s} test accuracy {scores[name]:.3f}  "
        f"(fit {time.perf_counter() - start:.1f} s)"
    )

# %%
# Training and test accuracy
# --------------------------
# The curves are the training accuracy of each epoch (``dynamics_["accuracy"]``);
# the dashed lines the accuracy on the held-out half. Both networks end up fitting
# their training rows; only the convolutional one, whose filters respond to a shape
# wherever it occurs, carries that over to signals it has not seen.
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
for (name, clf), color in zip(models.items(), ["0.5", "tab:red"], strict=True):
    d = clf.dynamics_
    ax.plot(d["epoch"], d["accuracy"], color=color, label=f"{name}, training")
    ax.axhline(scores[name], color=color, ls="--", label=f"{name}, test")
ax.set_xlabel("epoch")
ax.set_ylabel("accuracy")
ax.set_ylim(0.3, 1.02)
ax.legend(loc="lower right", fontsize="small")
plt.show()
