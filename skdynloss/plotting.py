"""Matplotlib figures of dynamical-loss training (the rows of Figure 4 of the paper).

matplotlib is an optional dependency (``pip install 'skdynloss[plots]'``); it is
imported only when a function here is called. Every function returns the
:class:`~matplotlib.figure.Figure` it drew on and never calls ``plt.show``, so the
functions work with any backend, Agg included. When no axes are passed, the figure is
created with :func:`matplotlib.pyplot.figure`, so that ``plt.show()`` displays it;
close it with ``plt.close(fig)`` when you are done.
"""

import math

import numpy as np
from sklearn.utils.validation import check_is_fitted

# The public schedule, the one the classifier applies: no formula of this module's own.
from . import class_weights

__all__ = [
    "period_summary",
    "CROSS_ENTROPY_COLOR",
    "DYNAMICAL_COLOR",
    "plot_decision_boundary",
    "plot_schedule",
    "plot_spiral_comparison",
    "plot_training_dynamics",
]

#: The colour of the dynamical loss (a fit trained with it, its curves) in every figure.
DYNAMICAL_COLOR = "tab:red"
#: The colour of plain cross-entropy in every figure.
CROSS_ENTROPY_COLOR = "0.35"
# The stability threshold is black and dotted everywhere.
_THRESHOLD_STYLE = {"color": "k", "ls": ":", "lw": 1.3}

_EXTRAS_HINT = (
    "skdynloss.plotting needs matplotlib, an optional dependency: "
    "pip install 'skdynloss[plots]'"
)


def period_summary(epoch, values, *, period):
    """One row per period of a per-epoch record: its last value, median, min and max.

    Period ``k`` holds epochs ``k * period + 1`` to ``(k + 1) * period``; its last
    epoch ends where all class weights are back to 1 (the dynamical loss then equals
    cross-entropy), so the ``last`` values of two fits are measured on the same loss.

    Parameters
    ----------
    epoch : array-like of shape (n,)
        Epochs (1-based, increasing) at which ``values`` were recorded.
    values : array-like of shape (n,)
        The record, e.g. ``sharpness_history_["dynamical"]`` or
        ``dynamics_["accuracy"]``.
    period : float
        The period T of the schedule, in epochs.

    Returns
    -------
    summary : dict of ndarray
        ``period`` (index k), ``end`` (the epoch ``(k + 1) * period``), ``last``,
        ``median``, ``min``, ``max`` and ``count`` (values in the period), for every
        period holding at least one value.

    Examples
    --------
    >>> from skdynloss.plotting import period_summary
    >>> s = period_summary([5, 10, 15, 20], [1.0, 3.0, 2.0, 0.5], period=10)
    >>> s["max"].tolist(), s["last"].tolist()
    ([3.0, 2.0], [3.0, 0.5])
    """
    epoch = np.asarray(epoch, dtype=float)
    values = np.asarray(values, dtype=float)
    if epoch.shape != values.shape or epoch.ndim != 1:
        raise ValueError(
            f"epoch and values must be 1-d of one length, got {epoch.shape} and "
            f"{values.shape}."
        )
    if not (period > 0 and math.isfinite(period)):
        raise ValueError(f"period must be positive and finite, got {period!r}.")
    index = np.ceil(epoch / period - 1e-9).astype(int) - 1
    keys = np.unique(index)
    rows = {k: [] for k in ("period", "end", "last", "median", "min", "max", "count")}
    for k in keys:
        v = values[index == k]
        rows["period"].append(k)
        rows["end"].append((k + 1) * period)
        rows["last"].append(v[-1])
        rows["median"].append(np.median(v))
        rows["min"].append(v.min())
        rows["max"].append(v.max())
        rows["count"].append(v.size)
    return {k: np.asarray(v) for k, v in rows.items()}


def _pyplot():
    """Import matplotlib.pyplot lazily, with an install hint when it is missing."""
    try:
        import matplotlib  # noqa: F401
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(_EXTRAS_HINT) from exc
    return plt


def _new_axes(nrows=1, ncols=1, *, figsize=None, **kwargs):
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kwargs)
    return fig, axes


def _final_estimator(clf):
    """The classifier itself, or the last step of a Pipeline."""
    # Pipeline (and imblearn's) exposes the last step as ``_final_estimator``; indexing
    # with [-1] also works, but a fitted Pipeline may hold "passthrough" there.
    while hasattr(clf, "steps") and hasattr(clf, "_final_estimator"):
        clf = clf._final_estimator
    return clf


def _threshold_label(clf):
    """How the stability threshold is computed, for the legend."""
    momentum = getattr(clf, "momentum", 0.0) or 0.0
    optimizer = getattr(clf, "optimizer", None)
    if optimizer == "sgd" and momentum > 0:
        return f"stability threshold (2+2m)/lr (m={momentum:g})"
    return "stability threshold 2/lr"


def _class_colors(n_classes):
    """One colour per class: the tab10 cycle without the two kept for the losses."""
    palette = [f"C{i}" for i in (0, 1, 2, 4, 5, 6, 8, 9)]
    return [palette[i % len(palette)] for i in range(n_classes)]


def _legend_above(ax, ncol):
    """A frameless legend above the top right corner, level with a left title."""
    ax.legend(
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=ncol,
        fontsize="small",
        frameon=False,
        borderaxespad=0.1,
        handlelength=1.6,
        columnspacing=1.0,
    )


def _symlog_decades(ax, largest, n_decades=4):
    """Symmetric log scale over ``n_decades`` decades below ``largest``, few ticks.

    The linear region (below ``largest / 10**n_decades``) keeps the quiet stretches
    readable while period-doubling bifurcations fill the logarithmic range; no tick at
    the edge of the linear region keeps the labels around zero from colliding.
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    top = math.ceil(math.log10(largest))
    linthresh = max(10.0 ** (top - n_decades), 1e-300)
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
    decades = [10.0**k for k in range(top, top - n_decades, -1)]
    ax.yaxis.set_major_locator(FixedLocator([*decades, 0.0, *(-d for d in decades)]))
    ax.yaxis.set_minor_locator(NullLocator())


def _period_marks(ax, period, n_epochs):
    """Faint vertical lines at the period boundaries, when there are not too many."""
    if not period or not math.isfinite(period) or period <= 0:
        return
    n_marks = int(n_epochs // period)
    if 1 <= n_marks <= 40:
        for k in range(1, n_marks + 1):
            ax.axvline(k * period, color="0.85", lw=0.6, zorder=0)


def plot_training_dynamics(clf, *, axes=None, figsize=None):
    """Plot the training dynamics of a fitted classifier, as in Figure 4 of the paper.

    One row per quantity, against the epoch (one gradient-descent step with
    ``batch_size=-1``, the paper's unit):

    (a) the class weights :math:`\\Gamma_i(t)`, one line per class in ``classes_``;
    (b) the dynamical loss :math:`F` and plain cross-entropy (log scale);
    (c) :math:`F(t) - F(t-1)` (symmetric log scale), where period-doubling
        bifurcations show up as oscillations of growing amplitude;
    (d) the training accuracy, measured during each epoch;
    (e) only when the estimator was fitted with ``sharpness_every``: the top Hessian
        eigenvalue of the dynamical loss and of cross-entropy, with the
        gradient-descent stability threshold (``2/lr``; ``(2 + 2 momentum)/lr`` for
        heavy-ball SGD) as a horizontal line. Adaptive optimizers have no such
        threshold; the panel says so.

    Parameters
    ----------
    clf : DynamicalLossClassifier or Pipeline
        A fitted :class:`~skdynloss.DynamicalLossClassifier`, or a fitted Pipeline
        whose last step is one.
    axes : sequence of matplotlib Axes, default=None
        Axes to draw on, one per row (4, or 5 when a sharpness history was recorded).
        None creates a new figure.
    figsize : tuple of float, default=None
        Size of the new figure, in inches; ignored when ``axes`` is given.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the axes.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the classifier is not fitted.
    ImportError
        If matplotlib is not installed.

    See Also
    --------
    plot_schedule : the weights :math:`\\Gamma_i(t)` of a schedule, without training.
    plot_decision_boundary : decision regions of a classifier on 2-D data.
    DynamicalLossClassifier : the estimator whose ``dynamics_`` and
        ``sharpness_history_`` are drawn.

    Examples
    --------
    >>> from skdynloss import DynamicalLossClassifier, make_spiral
    >>> from skdynloss.plotting import plot_training_dynamics
    >>> X, y = make_spiral()
    >>> clf = DynamicalLossClassifier(
    ...     amplitude=70, period=50, optimizer="sgd", momentum=0, lr=1,
    ...     batch_size=-1, max_epochs=200, sharpness_every=20, random_state=0,
    ... ).fit(X, y)
    >>> fig = plot_training_dynamics(clf)  # doctest: +SKIP
    >>> fig.savefig("dynamics.png")  # doctest: +SKIP
    """
    est = _final_estimator(clf)
    check_is_fitted(est, "dynamics_")
    dyn = est.dynamics_
    history = getattr(est, "sharpness_history_", None) or {}
    has_sharpness = len(history.get("epoch", ())) > 0
    n_rows = 5 if has_sharpness else 4

    if axes is None:
        _pyplot()
        if figsize is None:
            figsize = (8.0, 2.2 * n_rows + 0.6)
        fig, grid = _new_axes(
            n_rows, 1, figsize=figsize, sharex=True, layout="constrained"
        )
        axes = list(grid[:, 0])
    else:
        axes = list(np.ravel(axes))
        if len(axes) != n_rows:
            raise ValueError(
                f"axes must hold {n_rows} Axes (one per row: weights, loss, loss "
                f"differences, accuracy{', sharpness' if has_sharpness else ''}); "
                f"got {len(axes)}."
            )
        fig = axes[0].figure

    epoch = np.asarray(dyn["epoch"])
    weights = np.asarray(dyn["class_weights"], dtype=float)
    loss = np.asarray(dyn["loss"], dtype=float)
    ce = np.asarray(dyn["cross_entropy"], dtype=float)
    accuracy = np.asarray(dyn["accuracy"], dtype=float)
    period = float(getattr(est, "period", float("nan")))
    n_epochs = epoch[-1] if len(epoch) else 0

    # (a) class weights
    ax = axes[0]
    colors = _class_colors(len(est.classes_))
    for i, label in enumerate(est.classes_):
        ax.plot(epoch, weights[:, i], lw=1.2, color=colors[i], label=f"class {label}")
    ax.set_ylabel(r"$\Gamma_i(t)$")
    ax.set_title(
        f"(a) class weights (amplitude A={est.amplitude:g}, period T={est.period:g})",
        loc="left",
        fontsize="medium",
    )
    _legend_above(ax, ncol=min(len(est.classes_), 6))

    # (b) losses
    ax = axes[1]
    ax.plot(epoch, loss, lw=1.2, color=DYNAMICAL_COLOR, label="dynamical loss F")
    ax.plot(
        epoch, ce, lw=1.0, ls="--", color=CROSS_ENTROPY_COLOR, label="cross-entropy"
    )
    if np.any(loss > 0) or np.any(ce > 0):
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.set_title("(b) training loss", loc="left", fontsize="medium")
    _legend_above(ax, ncol=2)

    # (c) F(t) - F(t-1)
    ax = axes[2]
    diff = np.diff(loss)
    ax.plot(epoch[1:], diff, lw=0.6, color=DYNAMICAL_COLOR)
    finite = np.abs(diff[np.isfinite(diff) & (diff != 0)])
    if finite.size:
        _symlog_decades(ax, finite.max())
    ax.axhline(0.0, color="0.5", lw=0.5)
    ax.set_ylabel(r"$F(t) - F(t-1)$")
    ax.set_title("(c) loss change per epoch", loc="left", fontsize="medium")

    # (d) accuracy
    ax = axes[3]
    ax.plot(epoch, accuracy, lw=1.2, color="k", label="training accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(
        "(d) training accuracy (during each epoch)", loc="left", fontsize="medium"
    )

    # (e) sharpness
    if has_sharpness:
        ax = axes[4]
        h_epoch = np.asarray(history["epoch"])
        dynamical = np.asarray(history["dynamical"], dtype=float)
        cross = np.asarray(history["cross_entropy"], dtype=float)
        threshold = np.asarray(history.get("threshold", ()), dtype=float)
        # Markers only while they can be told apart.
        marker = "." if len(h_epoch) <= 150 else ""
        ax.plot(
            h_epoch,
            dynamical,
            marker + "-",
            ms=3,
            lw=1.0,
            color=DYNAMICAL_COLOR,
            label=r"$\lambda_{max}$ of F",
        )
        ax.plot(
            h_epoch,
            cross,
            marker + "--",
            ms=3,
            lw=1.0,
            color=CROSS_ENTROPY_COLOR,
            label=r"$\lambda_{max}$ of cross-entropy",
        )
        finite_thr = threshold[np.isfinite(threshold)]
        if finite_thr.size:
            value = float(finite_thr[-1])
            ax.axhline(
                value,
                **_THRESHOLD_STYLE,
                label=f"{_threshold_label(est)} = {value:.3g}",
            )
        else:
            ax.text(
                0.01,
                0.95,
                "no gradient-descent stability threshold for this optimizer",
                transform=ax.transAxes,
                va="top",
                fontsize="small",
                color="0.3",
            )
        values = np.concatenate([dynamical, cross, finite_thr])
        values = values[np.isfinite(values)]
        if values.size and np.all(values > 0):
            ax.set_yscale("log")
        ax.set_ylabel("top Hessian\neigenvalue")
        ax.set_title("(e) sharpness", loc="left", fontsize="medium")
        _legend_above(ax, ncol=3)

    for ax in axes:
        _period_marks(ax, period, n_epochs)
    axes[-1].set_xlabel("epoch (one gradient step with batch_size=-1)")
    return fig


def plot_schedule(
    n_classes=3,
    *,
    amplitude=70,
    period=5000,
    n_periods=None,
    shape="triangle",
    ax=None,
):
    """Plot the class weights :math:`\\Gamma_i(t)` of a dynamical loss over time.

    Parameters
    ----------
    n_classes : int, default=3
        Number of classes C.
    amplitude : float, default=70
        Peak raw weight A of the class in focus (the paper's Fig. 4 uses 70).
    period : float, default=5000
        Period T spent on each class (the paper's Fig. 4 uses 5000 steps).
    n_periods : int, default=None
        Number of periods to draw; None draws two full cycles through the classes
        (``2 * n_classes`` periods).
    shape : {"triangle", "sine"} or callable, default="triangle"
        Raw weight of the focus class over one period; see
        :func:`skdynloss.class_weights`.
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a new figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the axes.

    See Also
    --------
    skdynloss.class_weights : the weights being drawn.
    plot_training_dynamics : the weights applied during an actual fit, and more.

    Examples
    --------
    >>> from skdynloss.plotting import plot_schedule
    >>> fig = plot_schedule(3, amplitude=70, period=5000)  # doctest: +SKIP
    >>> fig.savefig("schedule.png")  # doctest: +SKIP
    """
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}.")
    n_classes = int(n_classes)
    if not (period > 0 and math.isfinite(period)):
        raise ValueError(f"period must be positive and finite, got {period!r}.")
    if n_periods is None:
        n_periods = 2 * n_classes
    if not n_periods > 0:
        raise ValueError(f"n_periods must be positive, got {n_periods!r}.")
    if ax is None:
        fig, grid = _new_axes(figsize=(8.0, 3.0), layout="constrained")
        ax = grid[0, 0]
    else:
        fig = ax.figure
    n_points = int(min(max(400 * n_periods, 2000), 200_000))
    t = np.linspace(0.0, n_periods * period, n_points, endpoint=False)
    gamma = class_weights(
        t, n_classes=n_classes, amplitude=amplitude, period=period, shape=shape
    )
    for i, color in enumerate(_class_colors(n_classes)):
        ax.plot(t, gamma[:, i], lw=1.3, color=color, label=f"class {i}")
    _period_marks(ax, period, n_periods * period)
    shape_name = (
        shape if isinstance(shape, str) else getattr(shape, "__name__", "custom")
    )
    ax.set_title(
        f"Dynamical loss weights: C={n_classes}, A={amplitude:g}, T={period:g}, "
        f"{shape_name}",
        fontsize="medium",
    )
    ax.set_xlabel("t (epochs; gradient steps when full-batch)")
    ax.set_ylabel(r"$\Gamma_i(t)$")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", ncol=min(n_classes, 5), fontsize="small")
    return fig


def plot_decision_boundary(clf, X, y, *, ax=None, resolution=200):
    """Plot the decision regions of a fitted classifier on two-dimensional data.

    Parameters
    ----------
    clf : fitted classifier
        Any fitted scikit-learn classifier (a Pipeline included) trained on two
        features, such as a :class:`~skdynloss.DynamicalLossClassifier` fitted on
        :func:`~skdynloss.make_spiral`.
    X : array-like of shape (n_samples, 2)
        Points to scatter on top of the regions.
    y : array-like of shape (n_samples,)
        Their labels; the title reports the accuracy of ``clf`` on ``(X, y)``.
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a new figure.
    resolution : int, default=200
        Grid points along each axis.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the axes.

    See Also
    --------
    sklearn.inspection.DecisionBoundaryDisplay : scikit-learn's general version.
    plot_training_dynamics : how the classifier got there.

    Examples
    --------
    >>> from skdynloss import DynamicalLossClassifier, make_spiral
    >>> from skdynloss.plotting import plot_decision_boundary
    >>> X, y = make_spiral()
    >>> clf = DynamicalLossClassifier(max_epochs=50, random_state=0).fit(X, y)
    >>> fig = plot_decision_boundary(clf, X, y)  # doctest: +SKIP
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(
            f"plot_decision_boundary needs two-dimensional data, got X of shape "
            f"{X.shape}."
        )
    if int(resolution) < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution!r}.")
    resolution = int(resolution)
    check_is_fitted(clf)
    if ax is None:
        fig, grid = _new_axes(figsize=(4.5, 4.2), layout="constrained")
        ax = grid[0, 0]
    else:
        fig = ax.figure
    from matplotlib.colors import BoundaryNorm, ListedColormap

    classes = np.asarray(getattr(clf, "classes_", np.unique(y)))
    n_classes = len(classes)
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.08 * np.where(hi > lo, hi - lo, 1.0)
    xx, yy = np.meshgrid(
        np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
        np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution),
    )
    predicted = clf.predict(np.c_[xx.ravel(), yy.ravel()])
    zz = np.searchsorted(classes, predicted).reshape(xx.shape)
    cmap = ListedColormap(_class_colors(n_classes))
    norm = BoundaryNorm(np.arange(-0.5, n_classes + 0.5), n_classes)
    ax.contourf(
        xx, yy, zz, levels=np.arange(-0.5, n_classes + 0.5), cmap=cmap, alpha=0.25
    )
    idx = np.searchsorted(classes, y)
    known = (idx < n_classes) & (classes[np.minimum(idx, n_classes - 1)] == y)
    ax.scatter(
        X[known, 0],
        X[known, 1],
        c=idx[known],
        cmap=cmap,
        norm=norm,
        s=12,
        edgecolors="k",
        linewidths=0.3,
    )
    accuracy = float(np.mean(clf.predict(X) == y))
    ax.set_title(f"accuracy on these points: {accuracy:.3f}", fontsize="medium")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal", adjustable="box")
    return fig


def _per_period(epoch, values, period, *, phase=None):
    """Values at one phase of every period (``phase=None``: the period's last one).

    ``phase`` is a fraction of the period, e.g. 0.5 for the middle; the values taken
    are those recorded at the epochs ``k * period + phase * period``.
    """

    epoch = np.asarray(epoch, dtype=float)
    values = np.asarray(values, dtype=float)
    if phase is None:
        summary = period_summary(epoch, values, period=period)
        full = summary["count"] > 0
        return summary["end"][full], summary["last"][full]
    offset = np.mod(epoch, period)
    keep = np.isclose(offset, phase * period)
    return epoch[keep], values[keep]


def plot_spiral_comparison(
    comparison, *, zoom_periods=4, resolution=200, fig=None, figsize=None
):
    """Draw a :func:`~skdynloss.experiments.spiral_comparison`: the demo's figure.

    The dynamical loss is drawn in :data:`DYNAMICAL_COLOR` and cross-entropy in
    :data:`CROSS_ENTROPY_COLOR` in every panel; classes keep one colour each.

    The panels:

    - (a) the result over all seeds: the final training accuracy of both losses;
    - (b), (c) the decision regions of the first seed's two fits;
    - (d) their training accuracy, at the end of every period (where all class
      weights are 1, so both fits are scored alike), over the raw per-epoch record;
    - (e) their sharpness against the gradient-descent stability threshold
      ``2/lr``, once per period: at its end, and for the dynamical fit also at its
      middle (the peak of the tilt), when ``sharpness_every`` divides the period so;
    - (f) the class weights over the last ``zoom_periods`` periods, and (g) the loss
      change :math:`F(t) - F(t-1)` of both fits over the same steps.

    Parameters
    ----------
    comparison : SpiralComparison
        The result of :func:`~skdynloss.experiments.spiral_comparison` with
        ``keep_first=True``.
    zoom_periods : int, default=4
        Periods shown in (f) and (g).
    resolution : int, default=200
        Grid points along each axis of the decision regions.
    fig : matplotlib.figure.Figure, default=None
        An empty figure to draw on, e.g. ``matplotlib.figure.Figure()`` to stay clear
        of pyplot's global state (as ``skdynloss demo`` does). None creates one with
        :func:`matplotlib.pyplot.figure`.
    figsize : tuple of float, default=None
        Size of the figure in inches (default (14, 15)); applied to a given ``fig``
        too.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn on.

    See Also
    --------
    skdynloss.experiments.spiral_comparison : the experiment drawn.
    plot_training_dynamics : every recorded quantity of one fit.
    """
    from . import make_spiral

    dyn_fit, ce_fit = comparison.dynamical[0], comparison.cross_entropy[0]
    dyn, ce = dyn_fit.estimator, ce_fit.estimator
    if dyn is None or ce is None:
        raise ValueError(
            "plot_spiral_comparison needs the first seed's estimators: run "
            "spiral_comparison with keep_first=True."
        )
    cfg = comparison.config
    period, lr = float(cfg["period"]), float(cfg["lr"])
    amp = f"A={cfg['amplitude']:g}, T={period:g}"
    dyn_label, ce_label = f"dynamical loss ({amp})", "cross-entropy (A=1)"
    X, y = make_spiral()
    n_epochs = int(dyn.n_iter_)

    figsize = figsize or (14.0, 15.0)
    if fig is None:
        fig = _pyplot().figure(figsize=figsize, layout="constrained")
    else:
        fig.set_size_inches(figsize)
        fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(5, 1, height_ratios=[1.45, 1.0, 1.0, 0.75, 0.85])
    top = grid[0].subgridspec(1, 3, width_ratios=[1.25, 1.0, 1.0])
    ax_seeds = fig.add_subplot(top[0])
    ax_b_ce, ax_b_dyn = fig.add_subplot(top[1]), fig.add_subplot(top[2])
    ax_acc = fig.add_subplot(grid[1])
    ax_sharp = fig.add_subplot(grid[2], sharex=ax_acc)
    ax_w = fig.add_subplot(grid[3])
    ax_diff = fig.add_subplot(grid[4], sharex=ax_w)
    small = {"loc": "left", "fontsize": "medium"}

    # (a) every seed: the result first.
    seeds = comparison.seeds
    acc_ce = np.array([f.accuracy for f in comparison.cross_entropy])
    acc_dyn = np.array([f.accuracy for f in comparison.dynamical])
    x = np.arange(len(seeds))
    ax_seeds.vlines(x, acc_ce, acc_dyn, color="0.8", lw=2.0, zorder=1)
    ax_seeds.scatter(
        x, acc_ce, s=45, color=CROSS_ENTROPY_COLOR, label=ce_label, zorder=2
    )
    ax_seeds.scatter(x, acc_dyn, s=45, color=DYNAMICAL_COLOR, label=dyn_label, zorder=2)
    for xi, a, b in zip(x, acc_ce, acc_dyn, strict=True):
        ax_seeds.annotate(
            f"{b - a:+.2f}",
            (xi, max(a, b)),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize="small",
        )
    ax_seeds.set_xticks(x, [str(s) for s in seeds])
    ax_seeds.set_xlim(-0.6, len(seeds) - 0.4)
    lo, hi = min(acc_ce.min(), acc_dyn.min()), max(acc_ce.max(), acc_dyn.max())
    ax_seeds.set_ylim(lo - 0.05, hi + 0.06)
    ax_seeds.set_xlabel("seed (initialisation)")
    ax_seeds.set_ylabel("final training accuracy")
    ax_seeds.grid(axis="y", color="0.92")
    ax_seeds.set_title(
        f"(a) every seed: dynamical ahead at {comparison.n_wins}/{len(seeds)}", **small
    )
    ax_seeds.legend(loc="lower left", fontsize="small", framealpha=0.9)

    # (b), (c) decision regions of the first seed.
    for ax, fit, label, color in (
        (ax_b_ce, ce_fit, "cross-entropy", CROSS_ENTROPY_COLOR),
        (ax_b_dyn, dyn_fit, "dynamical loss", DYNAMICAL_COLOR),
    ):
        plot_decision_boundary(fit.estimator, X, y, ax=ax, resolution=resolution)
        ax.set_title(
            f"({'b' if ax is ax_b_ce else 'c'}) {label}, seed {fit.seed}: "
            f"train acc. {fit.accuracy:.3f}",
            color=color,
            fontsize="medium",
        )
        ax.set_xlabel("")
        ax.set_ylabel("")
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2.0)

    # (d) training accuracy: faint per-epoch record, bold at the end of each period.
    for est, color, label in (
        (ce, CROSS_ENTROPY_COLOR, ce_label),
        (dyn, DYNAMICAL_COLOR, dyn_label),
    ):
        epoch, acc = est.dynamics_["epoch"], est.dynamics_["accuracy"]
        ax_acc.plot(epoch, acc, lw=0.4, color=color, alpha=0.25)
        # The median of each period: the per-step record dips at every period
        # boundary, where the weights turn and gradient descent is briefly unstable.
        summary = period_summary(epoch, acc, period=period)
        centres = summary["end"] - period / 2
        ax_acc.plot(
            centres, summary["median"], ".-", ms=3, lw=1.4, color=color, label=label
        )
    ax_acc.set_ylabel("training accuracy")
    ax_acc.set_title(
        f"(d) training accuracy of seed {dyn_fit.seed}: median of each period of "
        f"{period:g} steps (faint: every step)",
        **small,
    )
    ax_acc.legend(loc="lower right", fontsize="small", ncol=2, framealpha=0.9)
    ax_acc.tick_params(labelbottom=False)

    # (e) sharpness per period against 2/lr.
    h_dyn, h_ce = dyn.sharpness_history_, ce.sharpness_history_
    threshold = 2.0 / lr
    ends, values = _per_period(h_ce["epoch"], h_ce["dynamical"], period)
    ax_sharp.plot(
        ends,
        values,
        ".-",
        ms=3,
        lw=1.4,
        color=CROSS_ENTROPY_COLOR,
        label=f"{ce_label}, period end",
    )
    ends, values = _per_period(h_dyn["epoch"], h_dyn["dynamical"], period)
    ax_sharp.plot(
        ends,
        values,
        ".-",
        ms=3,
        lw=1.4,
        color=DYNAMICAL_COLOR,
        label="dynamical loss F, period end (weights 1)",
    )
    mids, values = _per_period(h_dyn["epoch"], h_dyn["dynamical"], period, phase=0.5)
    if len(mids):
        ax_sharp.plot(
            mids,
            values,
            ".--",
            ms=3,
            lw=0.9,
            color=DYNAMICAL_COLOR,
            alpha=0.6,
            label="dynamical loss F, mid-period (peak tilt)",
        )
    ax_sharp.axhline(threshold, **_THRESHOLD_STYLE, label=f"2/lr = {threshold:.3g}")
    ax_sharp.set_ylabel("sharpness\n(top Hessian eigenvalue)")
    ax_sharp.set_xlabel("gradient-descent step")
    ax_sharp.set_title(
        "(e) sharpness of the loss being trained, once per period, against the "
        "stability threshold 2/lr",
        **small,
    )
    ax_sharp.legend(loc="upper left", fontsize="small", ncol=2, framealpha=0.9)

    # (f) class weights over the last few periods, (g) the loss change over them.
    start = max(0, n_epochs - zoom_periods * period)
    epoch = np.asarray(dyn.dynamics_["epoch"])
    window = epoch > start
    weights = np.asarray(dyn.dynamics_["class_weights"])
    for i, color in enumerate(_class_colors(len(dyn.classes_))):
        ax_w.plot(
            epoch[window],
            weights[window, i],
            lw=1.4,
            color=color,
            label=f"class {dyn.classes_[i]}",
        )
    ax_w.set_ylabel(r"$\Gamma_i(t)$")
    ax_w.set_title(
        f"(f) class weights of the dynamical loss, last {zoom_periods} of "
        f"{n_epochs / period:g} periods (the last one is plain cross-entropy)",
        **small,
    )
    _legend_above(ax_w, ncol=len(dyn.classes_))
    ax_w.tick_params(labelbottom=False)
    largest = 0.0
    for est, color, label in (
        (ce, CROSS_ENTROPY_COLOR, ce_label),
        (dyn, DYNAMICAL_COLOR, dyn_label),
    ):
        e = np.asarray(est.dynamics_["epoch"])
        loss = np.asarray(est.dynamics_["loss"], dtype=float)
        keep = e[1:] > start
        diff = np.diff(loss)[keep]
        ax_diff.plot(e[1:][keep], diff, lw=0.8, color=color, label=label)
        finite = np.abs(diff[np.isfinite(diff)])
        largest = max(largest, float(finite.max()) if finite.size else 0.0)
    if largest > 0:
        _symlog_decades(ax_diff, largest)
    ax_diff.axhline(0.0, color="0.6", lw=0.5)
    ax_diff.set_ylabel(r"$F(t) - F(t-1)$")
    ax_diff.set_xlabel("gradient-descent step")
    ax_diff.set_title("(g) loss change per step over the same steps", **small)
    _legend_above(ax_diff, ncol=2)
    for ax in (ax_w, ax_diff):
        ax.set_xlim(start, n_epochs)
        for k in range(1, zoom_periods):
            ax.axvline(start + k * period, color="0.85", lw=0.6, zorder=0)

    verdict = comparison.conclusion
    fig.suptitle(
        f"Dynamical loss vs cross-entropy on the spiral (MLP 2-{cfg['hidden']}-3, "
        f"full-batch gradient descent, lr={lr:g}, {cfg['epochs']} steps, "
        f"{len(seeds)} seeds)\n{verdict[0].upper()}{verdict[1:]}",
        fontsize="large",
    )
    return fig
