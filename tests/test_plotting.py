import importlib
import sys

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere in this process

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skdynloss import DynamicalLossClassifier, class_weights, make_spiral  # noqa: E402
from skdynloss.plotting import (  # noqa: E402
    plot_decision_boundary,
    plot_schedule,
    plot_training_dynamics,
)

LABELS = np.array(["ant", "bee", "cat"])

# Full-batch gradient descent on a small spiral: one epoch is one step.
GD = {
    "amplitude": 10.0,
    "period": 5.0,
    "hidden_layer_sizes": (8,),
    "optimizer": "sgd",
    "momentum": 0.0,
    "lr": 0.5,
    "batch_size": -1,
    "max_epochs": 30,
    "random_state": 0,
    "compute_sharpness": False,
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def spiral():
    X, y = make_spiral(n_samples_per_class=20)
    return X, LABELS[y]


@pytest.fixture(scope="module")
def fitted(spiral):
    return DynamicalLossClassifier(**GD).fit(*spiral)


@pytest.fixture(scope="module")
def tracked(spiral):
    return DynamicalLossClassifier(**{**GD, "sharpness_every": 10}).fit(*spiral)


def _labelled(ax, prefix):
    return [line for line in ax.lines if line.get_label().startswith(prefix)]


def test_rows_without_sharpness_history(fitted):
    fig = plot_training_dynamics(fitted)
    axes = fig.get_axes()
    assert len(axes) == 4
    titles = [ax.get_title(loc="left") for ax in axes]
    assert [t[:3] for t in titles] == ["(a)", "(b)", "(c)", "(d)"]
    assert "class weights" in titles[0] and "accuracy" in titles[3]
    assert axes[-1].get_xlabel().startswith("epoch")


def test_weight_lines_are_the_fitted_weights(fitted):
    fig = plot_training_dynamics(fitted)
    ax = fig.get_axes()[0]
    lines = _labelled(ax, "class ")
    assert [line.get_label() for line in lines] == [f"class {c}" for c in LABELS]
    weights = fitted.dynamics_["class_weights"]
    for i, line in enumerate(lines):
        np.testing.assert_array_equal(line.get_xdata(), fitted.dynamics_["epoch"])
        np.testing.assert_array_equal(line.get_ydata(), weights[:, i])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"class {c}" for c in LABELS
    ]


def test_loss_difference_and_accuracy_panels(fitted):
    fig = plot_training_dynamics(fitted)
    ax_loss, ax_diff, ax_acc = fig.get_axes()[1:4]
    assert ax_loss.get_yscale() == "log"
    np.testing.assert_array_equal(
        _labelled(ax_loss, "dynamical")[0].get_ydata(), fitted.dynamics_["loss"]
    )
    np.testing.assert_array_equal(
        _labelled(ax_loss, "cross-entropy")[0].get_ydata(),
        fitted.dynamics_["cross_entropy"],
    )
    assert ax_diff.get_yscale() == "symlog"
    np.testing.assert_allclose(
        ax_diff.lines[0].get_ydata(), np.diff(fitted.dynamics_["loss"])
    )
    np.testing.assert_array_equal(
        ax_acc.lines[0].get_ydata(), fitted.dynamics_["accuracy"]
    )


def test_sharpness_row_and_threshold_at_two_over_lr(tracked):
    fig = plot_training_dynamics(tracked)
    axes = fig.get_axes()
    assert len(axes) == 5
    ax = axes[4]
    assert ax.get_title(loc="left").startswith("(e)")
    history = tracked.sharpness_history_
    np.testing.assert_array_equal(
        _labelled(ax, r"$\lambda_{max}$ of F")[0].get_ydata(), history["dynamical"]
    )
    np.testing.assert_array_equal(
        _labelled(ax, r"$\lambda_{max}$ of cross")[0].get_ydata(),
        history["cross_entropy"],
    )
    (threshold,) = _labelled(ax, "stability threshold")
    np.testing.assert_allclose(threshold.get_ydata(), [2 / GD["lr"]] * 2)
    assert "2/lr" in threshold.get_label()


def _with_history(clf, threshold):
    """A copy of a fitted estimator with a sharpness history filled in by hand."""
    import copy

    clf = copy.deepcopy(clf)
    clf.sharpness_history_ = {
        "epoch": np.array([10, 20, 30]),
        "dynamical": np.array([1.0, 5.0, 2.0]),
        "cross_entropy": np.array([1.0, 3.0, 2.5]),
        "threshold": np.full(3, threshold),
    }
    return clf


def test_momentum_threshold_is_labelled(fitted):
    clf = _with_history(fitted, 3.6)
    clf.momentum = 0.8
    ax = plot_training_dynamics(clf).get_axes()[4]
    (threshold,) = _labelled(ax, "stability threshold")
    np.testing.assert_allclose(threshold.get_ydata(), [3.6, 3.6])
    assert "(2+2m)/lr" in threshold.get_label()


def test_no_threshold_for_adaptive_optimizers(fitted):
    ax = plot_training_dynamics(_with_history(fitted, np.nan)).get_axes()[4]
    assert not _labelled(ax, "stability threshold")
    assert any(
        "no gradient-descent stability threshold" in t.get_text() for t in ax.texts
    )


def test_pipeline_and_given_axes(spiral):
    pipe = make_pipeline(StandardScaler(), DynamicalLossClassifier(**GD)).fit(*spiral)
    fig, axes = plt.subplots(4, 1)
    assert plot_training_dynamics(pipe, axes=axes) is fig
    np.testing.assert_array_equal(
        _labelled(axes[0], "class ")[0].get_ydata(),
        pipe[-1].dynamics_["class_weights"][:, 0],
    )
    with pytest.raises(ValueError, match="axes must hold 4 Axes"):
        plot_training_dynamics(pipe, axes=axes[:3])


def test_unfitted_raises_not_fitted():
    with pytest.raises(NotFittedError):
        plot_training_dynamics(DynamicalLossClassifier())
    with pytest.raises(NotFittedError):
        plot_training_dynamics(
            make_pipeline(StandardScaler(), DynamicalLossClassifier())
        )
    with pytest.raises(NotFittedError):
        plot_decision_boundary(DynamicalLossClassifier(), np.zeros((3, 2)), [0, 1, 0])


def test_figsize(fitted):
    fig = plot_training_dynamics(fitted, figsize=(6, 7))
    np.testing.assert_allclose(fig.get_size_inches(), [6, 7])


def test_plot_schedule_draws_class_weights():
    fig = plot_schedule(4, amplitude=70, period=5, n_periods=6)
    (ax,) = fig.get_axes()
    lines = _labelled(ax, "class ")
    assert len(lines) == 4
    t = lines[0].get_xdata()
    assert t[0] == 0 and t[-1] < 30
    gamma = class_weights(t, n_classes=4, amplitude=70, period=5)
    for i, line in enumerate(lines):
        np.testing.assert_allclose(line.get_ydata(), gamma[:, i])
    assert "A=70" in ax.get_title() and "T=5" in ax.get_title()
    assert ax.get_ylabel() == r"$\Gamma_i(t)$"


def test_plot_schedule_defaults_and_given_axes():
    fig, ax = plt.subplots()
    assert plot_schedule(ax=ax, shape="sine") is fig
    lines = _labelled(ax, "class ")
    assert len(lines) == 3
    # Two full cycles of the paper's period of 5000 steps.
    assert lines[0].get_xdata()[-1] == pytest.approx(6 * 5000, rel=1e-3)
    np.testing.assert_allclose(np.sum([ln.get_ydata() for ln in lines], axis=0), 3.0)
    with pytest.raises(ValueError, match="n_classes"):
        plot_schedule(0)
    with pytest.raises(ValueError, match="period"):
        plot_schedule(3, period=0)


def test_plot_decision_boundary(spiral, fitted):
    X, y = spiral
    fig = plot_decision_boundary(fitted, X, y, resolution=30)
    (ax,) = fig.get_axes()
    assert ax.collections  # the filled regions and the points
    assert f"{fitted.score(X, y):.3f}" in ax.get_title()
    # Any fitted scikit-learn classifier, a Pipeline included.
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    fig, ax = plt.subplots()
    assert plot_decision_boundary(pipe, X, y, ax=ax, resolution=20) is fig
    with pytest.raises(ValueError, match="two-dimensional"):
        plot_decision_boundary(fitted, np.c_[X, X], y)


def test_missing_matplotlib_hints_at_the_extra(monkeypatch, fitted):
    for name in [
        m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")
    ]:
        monkeypatch.setitem(sys.modules, name, None)
    import skdynloss.plotting as plotting

    # The module itself imports without matplotlib; only its functions need it.
    plotting = importlib.reload(plotting)
    for call in (
        lambda: plotting.plot_schedule(),
        lambda: plotting.plot_training_dynamics(fitted),
        lambda: plotting.plot_decision_boundary(fitted, np.zeros((3, 2)), [0, 1, 2]),
    ):
        with pytest.raises(ImportError, match=r"pip install 'skdynloss\[plots\]'"):
            call()


# ------------------------------------------------------- the demo's figure, colours


def test_plotting_uses_the_public_schedule():
    import skdynloss
    import skdynloss.plotting as plotting

    assert plotting.class_weights is skdynloss.class_weights


def test_one_colour_per_loss_in_the_training_dynamics(tracked):
    from matplotlib.colors import same_color

    from skdynloss.plotting import CROSS_ENTROPY_COLOR, DYNAMICAL_COLOR

    axes = plot_training_dynamics(tracked).get_axes()
    (f_line,) = _labelled(axes[1], "dynamical loss F")
    (ce_line,) = _labelled(axes[1], "cross-entropy")
    (f_sharp,) = _labelled(axes[4], r"$\lambda_{max}$ of F")
    (ce_sharp,) = _labelled(axes[4], r"$\lambda_{max}$ of cross")
    for line in (f_line, f_sharp, axes[2].lines[0]):
        assert same_color(line.get_color(), DYNAMICAL_COLOR)
    for line in (ce_line, ce_sharp):
        assert same_color(line.get_color(), CROSS_ENTROPY_COLOR)
    # The classes take none of the two loss colours.
    for line in _labelled(axes[0], "class "):
        assert not same_color(line.get_color(), DYNAMICAL_COLOR)
        assert not same_color(line.get_color(), CROSS_ENTROPY_COLOR)


SPIRAL_TINY = {
    "hidden": 8,
    "lr": 3.0,
    "amplitude": 10.0,
    "period": 10.0,
    "epochs": 40,
    "n_seeds": 2,
    "sharpness_every": 5,
}


@pytest.fixture(scope="module")
def comparison():
    from skdynloss.experiments import spiral_comparison

    return spiral_comparison(config=SPIRAL_TINY, seed=0)


def test_spiral_comparison_figure(comparison):
    from matplotlib.colors import same_color

    from skdynloss.experiments import period_summary
    from skdynloss.plotting import (
        CROSS_ENTROPY_COLOR,
        DYNAMICAL_COLOR,
        plot_spiral_comparison,
    )

    fig = plot_spiral_comparison(comparison, zoom_periods=2, resolution=20)
    assert plt.fignum_exists(fig.number)  # a pyplot figure: plt.show() shows it
    axes = fig.get_axes()
    titles = [ax.get_title(loc="left") or ax.get_title() for ax in axes]
    assert [t[:3] for t in titles] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)"]
    ax_seeds, ax_ce, ax_dyn, ax_acc, ax_sharp, ax_w, ax_diff = axes

    # (a) the per-seed result comes first, one colour per loss.
    ce_points, dyn_points = ax_seeds.collections[1:3]
    np.testing.assert_allclose(
        ce_points.get_offsets()[:, 1], [f.accuracy for f in comparison.cross_entropy]
    )
    np.testing.assert_allclose(
        dyn_points.get_offsets()[:, 1], [f.accuracy for f in comparison.dynamical]
    )
    assert same_color(ce_points.get_facecolor()[0], CROSS_ENTROPY_COLOR)
    assert same_color(dyn_points.get_facecolor()[0], DYNAMICAL_COLOR)
    assert f"{comparison.n_wins}/2" in titles[0]
    assert comparison.conclusion[1:] in fig.get_suptitle()

    # Every labelled line of a loss wears that loss's colour.
    for ax in (ax_acc, ax_sharp, ax_diff):
        for line in ax.lines:
            label = line.get_label()
            if "dynamical" in label:
                assert same_color(line.get_color(), DYNAMICAL_COLOR), label
            elif "cross-entropy" in label:
                assert same_color(line.get_color(), CROSS_ENTROPY_COLOR), label

    # (d) the median accuracy of every period.
    dyn = comparison.dynamical[0].estimator
    (acc_line,) = _labelled(ax_acc, "dynamical")
    summary = period_summary(
        dyn.dynamics_["epoch"], dyn.dynamics_["accuracy"], period=10
    )
    np.testing.assert_allclose(acc_line.get_ydata(), summary["median"])
    np.testing.assert_allclose(acc_line.get_xdata(), [5, 15, 25, 35])

    # (e) period-end and mid-period sharpness, and the threshold 2/lr.
    history = dyn.sharpness_history_
    (end_line,) = _labelled(ax_sharp, "dynamical loss F, period end")
    np.testing.assert_allclose(end_line.get_xdata(), [10, 20, 30, 40])
    np.testing.assert_allclose(end_line.get_ydata(), history["dynamical"][1::2])
    (mid_line,) = _labelled(ax_sharp, "dynamical loss F, mid-period")
    np.testing.assert_allclose(mid_line.get_xdata(), [5, 15, 25, 35])
    np.testing.assert_allclose(mid_line.get_ydata(), history["dynamical"][0::2])
    (threshold,) = _labelled(ax_sharp, "2/lr")
    np.testing.assert_allclose(threshold.get_ydata(), [2 / 3.0] * 2)

    # (f) the recorded class weights over the last two periods.
    lines = _labelled(ax_w, "class ")
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(21, 41))
    np.testing.assert_array_equal(
        lines[0].get_ydata(), dyn.dynamics_["class_weights"][20:, 0]
    )
    assert ax_w.get_xlim() == (20.0, 40.0)
    # F(t) - F(t-1) for t = 21, ..., 40.
    (diff_line,) = _labelled(ax_diff, "dynamical")
    np.testing.assert_array_equal(diff_line.get_xdata(), np.arange(21, 41))
    np.testing.assert_allclose(
        diff_line.get_ydata(), np.diff(dyn.dynamics_["loss"])[19:]
    )


def test_spiral_comparison_figure_needs_the_estimators(comparison):
    import dataclasses

    from skdynloss.plotting import plot_spiral_comparison

    bare = dataclasses.replace(
        comparison,
        dynamical=tuple(
            dataclasses.replace(f, estimator=None) for f in comparison.dynamical
        ),
    )
    with pytest.raises(ValueError, match="keep_first=True"):
        plot_spiral_comparison(bare)
    # Drawn on a figure of the caller's, outside pyplot, as the demo does.
    from matplotlib.figure import Figure

    given = Figure()
    assert plot_spiral_comparison(comparison, fig=given, resolution=10) is given
    assert len(given.get_axes()) == 7 and not plt.get_fignums()
