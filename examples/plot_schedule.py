"""
=====================================
The class weights of a dynamical loss
=====================================

A dynamical loss multiplies the cross-entropy of every sample by a weight
:math:`\\Gamma_{y}(t)` that depends on its class and on time. One class at a time is
*in focus*: over one period ``T`` its raw weight ``w`` rises from 1 to the amplitude
``A`` and falls back, while every other class keeps the raw weight 1. The raw weights
are then normalised so that they always sum to the number of classes ``C``:

.. math::

    \\Gamma_c = \\frac{C\\, w}{w + C - 1}, \\qquad
    \\Gamma_{i \\neq c} = \\frac{C}{w + C - 1}.

This example draws :math:`\\Gamma_i(t)` for the paper's triangle, for the smooth
``"sine"`` shape and for a user-defined callable, with the paper's values
``A = 70`` and ``C = 3``.
"""

# %%
# The raw weight of the class in focus
# ------------------------------------
# Over one period the raw weight of the class in focus follows ``shape``: the paper's
# triangle ``1 -> A -> 1``, or ``1 + (A - 1) sin^2(pi tau / T)``. Any callable
# ``shape(tau / T, amplitude)`` returning a positive number works as well; here a
# square pulse that holds the full amplitude over the middle half of each period.
import matplotlib.pyplot as plt
import numpy as np

from skdynloss import class_weights

A, C, T = 70.0, 3, 5.0  # amplitude, classes, period (epochs)


def pulse(phase, amplitude):
    """Raw weight ``amplitude`` for the middle half of the period, else 1."""
    return amplitude if 0.25 <= phase < 0.75 else 1.0


shapes = {"triangle": "triangle", "sine": "sine", "callable (pulse)": pulse}

phase = np.linspace(0, 1, 2000, endpoint=False)
raw = {
    "triangle": np.where(
        phase < 0.5, 1 + 2 * (A - 1) * phase, 2 * A - 1 - 2 * (A - 1) * phase
    ),
    "sine": 1 + (A - 1) * np.sin(np.pi * phase) ** 2,
    "callable (pulse)": np.array([pulse(p, A) for p in phase]),
}
# The normalised weight of the focus class, C w / (w + C - 1), as a function of phase:
# computed by the package at times t = phase * T (class 0 is in focus in [0, T)).
focus = {}
for name, shape in shapes.items():
    gamma = class_weights(phase * T, n_classes=C, amplitude=A, period=T, shape=shape)
    focus[name] = gamma[:, 0]

fig, (ax_raw, ax_norm) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for name in shapes:
    ax_raw.plot(phase, raw[name], label=name)
    ax_norm.plot(phase, focus[name], label=name)
ax_raw.set(
    xlabel=r"phase $\tau / T$",
    ylabel="raw weight $w$ of the focus class",
    title=f"Raw weight (A = {A:g})",
)
ax_norm.axhline(C, color="0.6", lw=0.8, ls=":")
ax_norm.set(
    xlabel=r"phase $\tau / T$",
    ylabel=r"$\Gamma_c = C w / (w + C - 1)$",
    title=f"After normalisation to sum C = {C}",
    ylim=(0, C + 0.2),
)
gamma_mid = class_weights(T / 2, n_classes=C, amplitude=A, period=T)
ax_norm.annotate(
    f"{gamma_mid[0]:.3f} at $\\tau = T/2$",
    xy=(0.5, gamma_mid[0]),
    xytext=(0.5, 2.35),
    ha="center",
    arrowprops={"arrowstyle": "->", "color": "0.3"},
)
ax_raw.legend()
ax_norm.legend(loc="lower center")
plt.show()

# %%
# Normalisation flattens the triangle into a plateau: once ``w`` is much larger than
# ``C - 1`` the focus weight saturates near ``C``. This flat-topped curve is the shape
# the paper uses. At the middle of a period the focus class weighs almost ``C`` and
# the others almost nothing; at the start of a period all weights are 1:
print("t = T/2:", class_weights(T / 2, n_classes=C, amplitude=A, period=T).round(4))
print("t = 0:  ", class_weights(0.0, n_classes=C, amplitude=A, period=T).round(4))

# %%
# The weights of all classes over two cycles
# ------------------------------------------
# The focus moves to the next class every period, 0, 1, ..., C-1, 0, ..., in the order
# of ``classes_``. ``period`` is measured in epochs; the clock advances by
# ``1 / steps_per_epoch`` at every optimizer step, so the weights change smoothly
# within an epoch.
t = np.linspace(0, 2 * C * T, 1200, endpoint=False)
fig, axes = plt.subplots(
    len(shapes), 1, figsize=(10, 6.5), sharex=True, sharey=True, layout="constrained"
)
for ax, (name, shape) in zip(axes, shapes.items(), strict=True):
    gamma = class_weights(t, n_classes=C, amplitude=A, period=T, shape=shape)
    for i in range(C):
        ax.plot(t, gamma[:, i], label=f"class {i}")
    ax.set_title(f"shape = {name}", loc="left", fontsize="medium")
    ax.set_ylabel(r"$\Gamma_i(t)$")
    for k in range(1, 2 * C):
        ax.axvline(k * T, color="0.85", lw=0.8, zorder=0)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=C)
axes[-1].set_xlabel(f"time t (epochs), period T = {T:g}")
plt.show()

# %%
# Whatever the shape, the weights sum to ``C`` at every time, so with balanced classes
# the loss keeps the scale of plain cross-entropy; ``amplitude=1`` gives all weights 1.
gamma = class_weights(t, n_classes=C, amplitude=A, period=T)
print("max |sum - C| =", np.abs(gamma.sum(axis=1) - C).max())

# %%
# The same picture in one call
# ----------------------------
# :func:`skdynloss.plotting.plot_schedule` draws the weights of any schedule, here the
# paper's ``A = 70``, ``C = 3`` with a period of 5 epochs.
from skdynloss.plotting import plot_schedule  # noqa: E402

fig = plot_schedule(3, amplitude=70, period=5)
plt.show()
