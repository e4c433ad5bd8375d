"""DynamicalLossClassifier: a scikit-learn classifier trained with a dynamical loss."""

import copy
import copyreg
import inspect
import math
import os
import threading
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_features,
    _num_samples,
    check_is_fitted,
    validate_data,
)
from skorch.callbacks import Callback

from ._callbacks import (
    RESERVED_NAMES,
    CycleEarlyStopping,
    DivergenceGuard,
    LossClock,
    ProgressBar,
    SharpnessTracker,
    top_hessian_eigenvalue,
    weighted_mean_loss,
)
from ._engine import (  # noqa: F401 (deferred_sigint, _Record: their home before)
    _Record,
    deferred_sigint,
    fit_one,
)
from ._losses import (
    BASE_LOSSES,
    DynamicalLoss,
    check_loss_callable,
    check_loss_signature,
    probabilities,
)
from ._modules import CNN, CNN1D, MLP, n_image_features
from ._net import DynamicalNet
from ._schedules import check_shape_callable
from ._threads import dense_macs, threads_for, torch_threads

# Module construction draws from torch's global RNG; a lock plus fork_rng makes the
# seeded initialisation of concurrent fits in threads (joblib's threading backend)
# independent of each other and leaves the caller's global RNG untouched.
_INIT_LOCK = threading.Lock()

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _same(a, b):
    """Whether two hyperparameter values are the same (arrays and tuples by value)."""
    if a is b:
        return True
    try:
        return bool(
            np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
        )
    except Exception:
        return a == b


def _invalid(name, expected, value):
    """scikit-learn's error for a parameter outside its constraints."""
    return InvalidParameterError(
        f"The {name!r} parameter of DynamicalLossClassifier must be {expected}. "
        f"Got {value!r} instead."
    )


def _resolve_device(device):
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine; use device='auto' to fall back to the CPU."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)."
            )
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(
                f"device={device!r}: MPS is not available on this machine."
            )
    elif parsed.type != "cpu":
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}: "
            "the network is trained on real data, which a "
            f"{parsed.type!r} device cannot hold."
        )
    return str(parsed)


def fit_seeds(random_state):
    """The seeds of one fit: (initialisation, shuffling and order, sharpness, split).

    One draw from ``random_state`` per fit, so that an int gives the same fit every
    time and a RandomState instance a new one (scikit-learn's convention).
    """
    rng = check_random_state(random_state)
    return tuple(int(s) for s in rng.randint(np.iinfo(np.int32).max, size=4))


def _hidden_sizes(value):
    """``hidden_layer_sizes`` as a tuple of positive Python ints, or a clear error."""
    sizes = (value,) if isinstance(value, Integral | Real) else value
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = None
    ok = sizes is not None and all(
        isinstance(s, Integral) and not isinstance(s, bool | np.bool_) and s >= 1
        for s in sizes
    )
    if not ok:
        raise _invalid(
            "hidden_layer_sizes",
            "a positive int or a sequence of positive ints (the widths of the hidden "
            "layers)",
            value,
        )
    return tuple(int(s) for s in sizes)


def _available_memory(device):
    """Bytes that a network on ``device`` may reasonably use (None when unknown)."""
    try:
        if device.startswith("cuda"):
            return torch.cuda.mem_get_info(torch.device(device))[0]
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def _cloned(state):
    """A copy of a (nested) state dict whose tensors are cloned (deepcopy's generic
    walk costs milliseconds on an optimizer's state)."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return type(state)((k, _cloned(v)) for k, v in state.items())
    if isinstance(state, list | tuple):
        return type(state)(_cloned(v) for v in state)
    return state


class DynamicalLossClassifier(ClassifierMixin, BaseEstimator):
    """Neural network classifier trained with a dynamical loss function.

    A PyTorch MLP or CNN, trained through skorch, whose loss has class weights that
    oscillate during training so that one class at a time is emphasised
    (Ruiz-Garcia et al., 2021):

    .. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\Gamma_{y_\\mu}(t)\\, \\ell(f(x_\\mu), y_\\mu),

    with the cross-entropy ``ell`` by default. The weight of the class in focus follows
    ``shape`` over each ``period`` epochs (peak raw weight ``amplitude``), the weights
    always sum to the number of classes, and the focus moves through ``classes_`` in
    order. ``amplitude=1`` is the plain base loss.

    Parameters
    ----------
    amplitude : float, default=10.0
        Peak raw weight A >= 1 of the class in focus; 1 gives the plain base loss.
    period : float or "auto", default="auto"
        Epochs spent on each class (T). The clock advances by 1/steps_per_epoch at every
        optimizer step, so a period may be fractional. ``"auto"`` makes every ``fit``
        two full cycles of the focus through the classes, then the static last period:
        ``max_epochs / (2 * n_classes + static_last_period)`` (resolved into
        ``period_``).
    shape : {"triangle", "sine"} or callable, default="triangle"
        Raw weight of the focus class over one period: the paper's triangle
        ``1 -> A -> 1``, a smooth ``1 + (A - 1) sin^2(pi tau / T)``, or a callable
        ``shape(tau / T, amplitude) -> positive float``. The raw weights (focus ``w``,
        others 1) are normalised to sum to the number of classes.
    order : {"cyclic", "random"}, default="cyclic"
        Order in which classes take the focus: that of ``classes_`` (the paper's), or a
        random permutation per cycle, seeded by ``random_state``.
    static_last_period : bool, default=True
        Train the last ``period`` epochs of every ``fit`` with the plain base loss, as
        the paper does. Not applied by ``partial_fit``, whose end is unknown.
    loss : {"cross_entropy", "squared_error", "squared_error_sum", \
            "squared_error_per_output"} or callable, default="cross_entropy"
        The base loss that the class weights tilt: cross-entropy of the logits (the
        paper's); a squared error of the outputs against one-hot targets (Lavin and
        Ruiz-Garcia, 2024), ``(1/C) sum_j (f_j - delta_{j,y})^2`` (``"squared_error"``)
        or ``sum_j (f_j - delta_{j,y})^2`` (``"squared_error_sum"``) weighted by the
        weight of the sample's class, or ``sum_j Gamma_j (f_j - delta_{j,y})^2``
        (``"squared_error_per_output"``), each output weighted by the weight of its
        class; or a callable ``loss(outputs, y) -> per-sample losses`` (a tensor of
        shape (n,)). ``predict_proba`` is the softmax of the outputs, except for the
        squared errors, whose outputs estimate the one-hot targets: there it is the
        outputs clipped at 0 and normalised to sum to 1.
    module : {"mlp", "cnn", "cnn1d"} or callable, default="mlp"
        The network: a ReLU MLP, a small 2-D convolutional network for images given
        as flat rows (``image_shape``), or a small 1-D convolutional network for rows
        that are signals (spectra, time series, sensor traces; ``signal_channels``).
        A callable (for instance a ``torch.nn.Module`` subclass) is called
        as ``module(n_features=..., n_classes=...)`` and must return a module that maps a
        float tensor of shape (n, n_features) to outputs of shape (n, n_classes).
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Widths of the hidden layers of the MLP, or of the dense head of the CNNs.
    image_shape : tuple of int, default=None
        For ``module="cnn"``: the ``(channels, height, width)`` each row of X is reshaped
        to. None infers ``(1, s, s)`` when n_features is a perfect square ``s * s``.
    signal_channels : int, default=1
        For ``module="cnn1d"``: each row of X holds this many signals of equal length,
        one after the other (``n_features / signal_channels`` samples each).
    optimizer : {"sgd", "adam"} or torch optimizer class, default="adam"
        The optimizer: ``torch.optim.SGD`` or ``torch.optim.Adam``, with torch's fused
        kernel where the device has one. ``"sgd"`` with ``momentum=0`` and
        ``batch_size=-1`` is plain gradient descent, the paper's setting. A torch
        optimizer class, e.g. ``torch.optim.AdamW``, ``RMSprop``, ``Adagrad`` or
        ``LBFGS``, is used with its own defaults, and ``lr``, ``weight_decay`` (and
        ``momentum`` for SGD) where it has them. ``torch.optim.SparseAdam``, which
        needs sparse gradients, is refused.
    lr : float, default=3e-3
        Learning rate. (The defaults were chosen by a sweep over scikit-learn's data
        sets; the documentation's "Defaults" page has the table.)
    momentum : float, default=0.9
        Heavy-ball momentum of ``"sgd"`` (ignored by other optimizers).
    weight_decay : float, default=0.0
        L2 penalty passed to the optimizer.
    batch_size : int, default=64
        Mini-batch size; ``-1`` means full-batch gradient descent (skorch's convention),
        as in the paper.
    max_epochs : int, default=100
        Epochs per ``fit`` (``partial_fit`` runs one).
    early_stopping : bool, default=False
        Stop a ``fit`` when it stops improving. ``False`` trains all ``max_epochs``
        (there is no stopping rule, unlike MLPClassifier, whose rule on the training
        loss is always on). ``True`` holds out ``validation_fraction`` of the training
        data (stratified) and judges its accuracy, as MLPClassifier's
        ``early_stopping=True``; with ``validation_fraction=None`` it judges the plain
        base loss of the training data instead (all class weights 1, as
        ``base_loss_curve_`` records it), MLPClassifier's rule without early
        stopping. An epoch improves when it beats the best value so far by ``tol``,
        and the fit stops at a judged epoch more than ``n_iter_no_change`` epochs
        after the last one that improved. With ``amplitude=1`` every epoch is judged
        and, on the validation accuracy, the parameters of the best epoch are kept,
        as in MLPClassifier. With a tilt (``amplitude > 1``) only the epoch in which
        a period ends is judged (the weights are back to 1 there; inside a period the
        tilted training trades one class against the others by design), none of the
        call's plain last period, and the fit does not stop before two whole cycles
        through the classes (``2 * n_classes * period`` epochs). Then, with
        ``static_last_period=True``, it trains one more period with the plain base
        loss (``ceil(period)`` epochs, from the next step on) and ends there, with the
        parameters it ends with; without it, it ends at once, keeping the parameters
        of the best period end (validation accuracy). ``period="auto"`` makes the two
        cycles all of the fit but its plain last period, so early stopping can only
        shorten a fit with a fixed ``period`` shorter than
        ``max_epochs / (2 * n_classes + 1)``. A ``fit`` that reaches ``max_epochs``
        before the rule holds warns (``ConvergenceWarning``), as MLPClassifier does.
        A validation split also gives skorch callbacks that need one
        (``EarlyStopping``, ``Checkpoint``) their ``valid_loss`` and ``valid_acc``.
        ``partial_fit`` does not support it (a ValueError, as in MLPClassifier).
    validation_fraction : float or None, default=0.1
        Share of the training data held out with ``early_stopping``; None holds out
        nothing and judges the training data's plain base loss.
    n_iter_no_change : int, default=10
        Epochs without improvement before ``early_stopping`` stops training.
    tol : float, default=1e-4
        Least improvement of the judged value (accuracy, or base loss) that counts.
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU. Resolved into ``device_``.
    dtype : {"float32", "float64"}, default="float32"
        Floating point type of the network and data; the paper used float64.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling, the validation split and the sharpness
        subsample of each fit. An int gives bit-identical results on the CPU, also for
        fits run in parallel.
    warm_start : bool, default=False
        Continue training the fitted network on ``fit`` (the clock resumes), with
        the current ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
        ``amplitude``, ``period``, ``shape``, ``order``, ``static_last_period``,
        ``max_epochs``, ``verbose`` and ``compute_sharpness``. Changing what the first
        fit built (``module``, ``hidden_layer_sizes``, ``image_shape``,
        ``signal_channels``, ``optimizer``,
        ``loss``, ``device``, ``dtype``, ``callbacks``, ``early_stopping``,
        ``sharpness_every``, ``sharpness_max_samples``) is an error; ``random_state``
        only seeds new fits.
    compute_sharpness : bool, default=True
        Compute ``sharpness_`` after each ``fit`` and ``partial_fit`` call (about a
        dozen Hessian-vector products over at most ``sharpness_max_samples`` rows,
        at most 10 % of a default fit on iris); turn it off when calling ``partial_fit``
        many times.
    sharpness_max_samples : int, default=2048
        Rows of the training data (a seeded random subsample when there are more) over
        which ``sharpness_`` and ``sharpness_history_`` are computed.
    sharpness_every : int or None, default=None
        Every so many epochs, record the top Hessian eigenvalue of the loss being
        minimised and of the plain base loss in ``sharpness_history_``.
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        Extra skorch callbacks, deep-copied for every fit.
    verbose : int, default=0
        0 prints nothing; 1 shows a progress bar per ``fit`` (epochs done, loss,
        training accuracy, time left) on stderr, as plain lines when stderr is not a
        terminal; 2 adds an epoch log, at most one line a second.
    n_threads : int or None, default=None
        torch's intra-op threads during ``fit``, ``partial_fit`` and prediction
        (restored after each call). None chooses from the size of one step's work:
        one thread for the small products of typical batches (a second thread saves
        nothing there, and makes a fit many times slower while another process keeps
        a core busy), more for large batches of wide layers, never more than torch's
        setting (``torch.get_num_threads()``); a callable ``module`` runs with
        torch's setting. An int sets the count; -1 leaves torch's setting as it is.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order the focus visits them.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of X, when it has string column names.
    net_ : skorch.NeuralNetClassifier
        The trained skorch net (its ``history`` holds the per-epoch records).
    module_ : torch.nn.Module
        The trained network; it maps rows of X, as given, to outputs.
    device_ : str
        Device the network lives on.
    n_iter_ : int
        Epochs trained in total (an epoch cut short by Ctrl-C counts).
    period_ : float
        The period in epochs that the last call trained with (``period`` resolved).
    loss_curve_ : list of float
        The loss minimised in each epoch (mean over its steps): the dynamical loss,
        tilted by the class weights of its time, so its values rise and fall with
        the focus by design; the plain last period's epochs hold the plain base loss.
    base_loss_curve_ : list of float
        The plain base loss of each epoch (all class weights 1, the unweighted mean
        over the samples), measured in the same forward passes as ``loss_curve_``;
        also ``dynamics_["base_loss"]``. It equals ``loss_curve_`` where the weights
        are all 1 (``amplitude=1``, the plain last period).
    loss_ : float
        The loss of the last epoch, ``loss_curve_[-1]``, as MLPClassifier's.
    best_loss_ : float or None
        The lowest value of ``loss_curve_``; None with ``early_stopping`` on a
        validation split (see ``best_validation_score_``), as in MLPClassifier.
    class_weights_ : ndarray of shape (`n_iter_`, n_classes)
        Class weights applied in each epoch (mean over its steps).
    dynamics_ : dict of ndarray
        Per-epoch record for the paper's Fig. 4: ``epoch``, ``time`` (clock at the end of
        the epoch), ``loss`` (dynamical), ``base_loss`` (unweighted; also
        ``cross_entropy`` for the cross-entropy base), ``accuracy`` (training, as
        measured during the epoch), ``class_weights``.
    sharpness_ : float
        Largest eigenvalue of the Hessian of the unweighted mean base loss over the
        training data (at most ``sharpness_max_samples`` rows) at the fitted parameters,
        in eval mode. NaN when ``compute_sharpness=False``.
    sharpness_info_ : dict
        How ``sharpness_`` was computed: ``n_samples``, ``n_matvec`` (Hessian-vector
        products), ``residual``, ``converged``.
    sharpness_history_ : dict of ndarray
        With ``sharpness_every``: ``epoch``, ``dynamical`` (top eigenvalue of the loss
        being minimised), ``base`` (of the plain base loss; also ``cross_entropy``) and
        ``threshold`` (2/lr for gradient descent, (2 + 2 momentum)/lr with heavy-ball
        momentum, NaN for adaptive optimizers).
    validation_scores_ : list of float or None
        With ``early_stopping`` on a validation split: the validation accuracy of
        each epoch (of every epoch, also those the rule does not judge); None
        otherwise.
    best_validation_score_ : float or None
        With ``early_stopping`` on a validation split: the best of them.
    diverged_ : bool
        Whether training stopped because the loss became non-finite (the parameters of
        the last finite epoch were kept).

    See Also
    --------
    DynamicalLoss : the loss as a torch module.
    sklearn.neural_network.MLPClassifier : scikit-learn's MLP.

    References
    ----------
    Ruiz-Garcia, M., Zhang, G., Schoenholz, S. S. and Liu, A. J. "Tilting the playing
    field: Dynamical loss functions for machine learning", ICML 2021,
    :arxiv:`2102.03793`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skdynloss import DynamicalLossClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(
    ...     StandardScaler(), DynamicalLossClassifier(amplitude=5, random_state=0)
    ... ).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        "amplitude": [Interval(Real, 1, None, closed="left")],
        "period": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "shape": [StrOptions({"triangle", "sine"}), callable],
        "order": [StrOptions({"cyclic", "random"})],
        "static_last_period": ["boolean"],
        "loss": [StrOptions(set(BASE_LOSSES)), callable],
        "module": [StrOptions({"mlp", "cnn", "cnn1d"}), callable],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "image_shape": [tuple, list, None],
        "signal_channels": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions({"sgd", "adam"}), callable],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            Options(Integral, {-1}),
        ],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "compute_sharpness": ["boolean"],
        "sharpness_max_samples": [Interval(Integral, 1, None, closed="left")],
        "sharpness_every": [Interval(Integral, 1, None, closed="left"), None],
        "callbacks": [list, None],
        "verbose": ["verbose"],
        "n_threads": [
            Interval(Integral, 1, None, closed="left"),
            Options(Integral, {-1}),
            None,
        ],
    }

    def __init__(
        self,
        amplitude=10.0,
        period="auto",
        shape="triangle",
        order="cyclic",
        static_last_period=True,
        loss="cross_entropy",
        module="mlp",
        hidden_layer_sizes=(100,),
        image_shape=None,
        signal_channels=1,
        optimizer="adam",
        lr=3e-3,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=64,
        max_epochs=100,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        device="auto",
        dtype="float32",
        random_state=None,
        warm_start=False,
        compute_sharpness=True,
        sharpness_max_samples=2048,
        sharpness_every=None,
        callbacks=None,
        verbose=0,
        n_threads=None,
    ):
        self.amplitude = amplitude
        self.period = period
        self.shape = shape
        self.order = order
        self.static_last_period = static_last_period
        self.loss = loss
        self.module = module
        self.hidden_layer_sizes = hidden_layer_sizes
        self.image_shape = image_shape
        self.signal_channels = signal_channels
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.compute_sharpness = compute_sharpness
        self.sharpness_max_samples = sharpness_max_samples
        self.sharpness_every = sharpness_every
        self.callbacks = callbacks
        self.verbose = verbose
        self.n_threads = n_threads

    # --------------------------------------------------------- fitted records

    def _fitted_record(self):
        record = self.__dict__.get("_epochs")
        if record is None:
            raise AttributeError("This DynamicalLossClassifier is not fitted yet.")
        return record

    def _assigned(self, name):
        """A value assigned to a record attribute by hand (plots of made-up data)."""
        return self.__dict__.get("_assigned_", {}).get(name)

    def _assign(self, name, value):
        self.__dict__.setdefault("_assigned_", {})[name] = value

    @property
    def loss_curve_(self):
        """The dynamical loss of each epoch (mean over its steps)."""
        assigned = self._assigned("loss_curve_")
        if assigned is not None:
            return assigned
        return list(self._fitted_record().rows["loss"])

    @loss_curve_.setter
    def loss_curve_(self, value):
        self._assign("loss_curve_", value)

    @property
    def base_loss_curve_(self):
        """The plain base loss of each epoch (all class weights 1), measured in the
        same forward passes as ``loss_curve_``."""
        assigned = self._assigned("base_loss_curve_")
        if assigned is not None:
            return assigned
        return list(self._fitted_record().rows["base_loss"])

    @base_loss_curve_.setter
    def base_loss_curve_(self, value):
        self._assign("base_loss_curve_", value)

    @property
    def loss_(self):
        """The loss of the last epoch, ``loss_curve_[-1]`` (NaN before any epoch)."""
        curve = self._fitted_record().rows["loss"]
        return float(curve[-1]) if curve else math.nan

    @property
    def best_loss_(self):
        """The lowest of ``loss_curve_``; None with a validation split for early
        stopping (``best_validation_score_`` then), as in MLPClassifier."""
        record = self._fitted_record()
        if self._validating(self._built_params):
            return None
        return float(min(record.rows["loss"], default=math.inf))

    @property
    def dynamics_(self):
        """Per-epoch record: epoch, time, loss, base_loss, accuracy, class_weights."""
        assigned = self._assigned("dynamics_")
        if assigned is not None:
            return assigned
        return dict(self._fitted_record().arrays()[0])

    @dynamics_.setter
    def dynamics_(self, value):
        self._assign("dynamics_", value)

    @property
    def class_weights_(self):
        """Class weights applied in each epoch (mean over its steps)."""
        assigned = self._assigned("class_weights_")
        if assigned is not None:
            return assigned
        return self._fitted_record().arrays()[0]["class_weights"]

    @class_weights_.setter
    def class_weights_(self, value):
        self._assign("class_weights_", value)

    @property
    def sharpness_history_(self):
        """With ``sharpness_every``: epoch, dynamical, base, threshold."""
        assigned = self._assigned("sharpness_history_")
        if assigned is not None:
            return assigned
        return dict(self._fitted_record().arrays()[1])

    @sharpness_history_.setter
    def sharpness_history_(self, value):
        self._assign("sharpness_history_", value)

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on (X, y) for ``max_epochs`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels (any type ``np.unique`` can sort).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples: each sample's loss is weighted, and
            the loss of a batch is divided by the batch's total weight, so that in
            full-batch training integer weights train exactly as repeated rows would.

        Returns
        -------
        self : DynamicalLossClassifier
            The fitted estimator.
        """
        continuing = self.warm_start and hasattr(self, "net_")
        return self._fit(
            X, y, sample_weight, continuing=continuing, epochs=self.max_epochs
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one epoch on (X, y), continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.
        classes : array-like of shape (n_classes,), default=None
            All the classes that can appear in y. Required on the first call; on later
            calls it must be the same or None.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the samples (see :meth:`fit`).

        Returns
        -------
        self : DynamicalLossClassifier
            The fitted estimator.

        Raises
        ------
        ValueError
            With ``early_stopping=True``, as MLPClassifier's ``partial_fit``: a
            validation split held out of every batch is not early stopping.
        """
        if self.early_stopping:
            # As MLPClassifier: a validation split held out of every batch would
            # train on a different 90% of each one and compare scores across them.
            raise ValueError("partial_fit does not support early_stopping=True")
        continuing = hasattr(self, "net_")
        if not continuing and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(
            X, y, sample_weight, continuing=continuing, epochs=1, classes=classes
        )

    def _fit(self, X, y, sample_weight, *, continuing, epochs, classes=None):
        # validate -> encode labels -> build -> train -> record (the engine's
        # prepare, train and commit): the estimator changes only when the whole call
        # succeeded. Autograd whatever the caller's context (no_grad,
        # inference_mode): tensors made under inference mode cannot be trained.
        threads = self._threads(X, y, classes, continuing=continuing)
        with torch.inference_mode(False), torch.enable_grad(), torch_threads(threads):
            return fit_one(
                self,
                X,
                y,
                sample_weight,
                continuing=continuing,
                epochs=epochs,
                classes=classes,
            )

    def _threads(self, X, y=None, classes=None, *, continuing=False, training=True):
        """torch's intra-op threads for a call on X (None: torch's setting as it is).

        ``n_threads=None`` chooses from the work of one step (rows of a batch times
        the multiply-adds of a row through the built-in network, see
        ``skdynloss._threads``), never more than torch's setting; a callable module's
        work is not known, and it runs with torch's setting.
        """
        if self.n_threads is not None:
            return None if self.n_threads == -1 else int(self.n_threads)
        try:
            rows, n_features = _num_samples(X), _num_features(X)
            if continuing or not training:
                n_classes = len(self.classes_)
            elif classes is not None:
                n_classes = len(np.unique(np.asarray(classes)))
            else:
                n_classes = len(np.unique(np.asarray(y)))
            macs = self._macs_per_row(
                int(n_features), n_classes, fitted=continuing or not training
            )
        except Exception:  # bad input: the call's own validation will say why
            return None
        if macs is None:
            return None
        if training and int(self.batch_size) != -1:
            rows = min(rows, int(self.batch_size))
        return threads_for(rows, macs, torch.get_num_threads(), training=training)

    def _macs_per_row(self, n_features, n_classes, *, fitted):
        """Multiply-adds of one row's forward pass through the built-in network, or
        None for a callable module."""
        module = self.__dict__.get("module_") if fitted else None
        if module is not None:
            return module.macs_per_row() if hasattr(module, "macs_per_row") else None
        if not isinstance(self.module, str):
            return None
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        if self.module == "mlp":
            return dense_macs((n_features, *hidden, n_classes))
        if self.module == "cnn1d":
            channels = int(self.signal_channels)
            if n_features % channels:
                return None  # the fit's own error says why
            return CNN1D.macs(n_features, n_classes, hidden, channels)
        shape = self.image_shape
        if shape is None:
            side = int(round(np.sqrt(n_features)))
            shape = (1, side, side)
        if n_image_features(shape) != n_features:
            return None  # the fit's own error says why
        return CNN.macs(shape, n_classes, hidden)

    #: Hyperparameters that define what the first fit built (the network, its device,
    #: dtype, loss and optimizer class, the callbacks); a warm start cannot change them.
    _STRUCTURAL = (
        "module",
        "hidden_layer_sizes",
        "image_shape",
        "signal_channels",
        "optimizer",
        "loss",
        "device",
        "dtype",
        "callbacks",
        "early_stopping",
        "validation_fraction",
        "sharpness_every",
        "sharpness_max_samples",
    )

    def _check_hyperparameters(self):
        """What ``_parameter_constraints`` cannot say, checked before anything runs."""
        for name in ("amplitude", "period", "lr", "weight_decay", "tol"):
            value = getattr(self, name)
            if not (value == "auto" or math.isfinite(value)):
                raise _invalid(name, "a finite number", value)
        _hidden_sizes(self.hidden_layer_sizes)
        check_shape_callable(self.shape, self.amplitude)
        check_loss_signature(self.loss)
        if self.optimizer is torch.optim.SparseAdam:
            raise _invalid(
                "optimizer",
                "an optimizer for dense gradients ('sgd', 'adam', or a class such as "
                "torch.optim.AdamW); torch.optim.SparseAdam needs sparse gradients, "
                "which the network does not have",
                self.optimizer,
            )
        if self.image_shape is not None:
            shape = list(self.image_shape)
            if not 2 <= len(shape) <= 3 or not all(
                isinstance(s, Integral) and not isinstance(s, bool) and s >= 1
                for s in shape
            ):
                raise _invalid(
                    "image_shape",
                    "None or a tuple (channels, height, width) or (height, width) of "
                    "positive ints",
                    self.image_shape,
                )
        for i, cb in enumerate(self.callbacks or []):
            name, callback = (
                cb if isinstance(cb, tuple) and len(cb) == 2 else (None, cb)
            )
            if not isinstance(callback, Callback):
                raise _invalid(
                    "callbacks",
                    "a list of skorch callbacks or (name, callback) tuples",
                    f"{type(cb).__name__} at position {i}",
                )
            if name is not None and (
                not isinstance(name, str) or name in RESERVED_NAMES
            ):
                raise ValueError(
                    f"callbacks[{i}] is named {name!r}, which the classifier uses for its "
                    f"own callbacks ({', '.join(RESERVED_NAMES)}); choose another name."
                )
            try:
                copy.deepcopy(callback)
            except Exception as exc:
                raise ValueError(
                    f"callbacks[{i}] ({type(callback).__name__}) cannot be deep-copied, "
                    "which the classifier does for every fit so that the hyperparameter "
                    f"itself never changes: {exc}"
                ) from exc
            monitor = getattr(callback, "monitor", None)
            needs_valid = isinstance(monitor, str) and monitor.startswith("valid_")
            if needs_valid and not self._validating():
                raise ValueError(
                    f"callbacks[{i}] ({type(callback).__name__}) monitors {monitor!r}, "
                    "which needs a validation split: set early_stopping=True (with "
                    "validation_fraction not None; n_iter_no_change=max_epochs leaves "
                    "the stopping to the callback)."
                )

    def _update_built(self):
        """Carry hyperparameters changed since the network was built into it."""
        params = self.get_params(deep=False)
        built = self._built_params
        changed = [k for k in self._STRUCTURAL if not _same(params[k], built[k])]
        if changed:
            raise ValueError(
                f"warm_start=True continues the network built by the first fit, but "
                f"{', '.join(changed)} changed since then. Fit with warm_start=False "
                "to build a new one."
            )
        net = self.net_
        net.batch_size = int(self.batch_size)
        # Only what the optimizer was built with (RMSprop has a momentum setting, but
        # it is not the heavy-ball momentum of "sgd" and is left as it was built).
        _, passed = self._optimizer_spec(self.device_)
        for group in net.optimizer_.param_groups:
            group["lr"] = float(self.lr)
            for key in ("momentum", "weight_decay"):
                if f"optimizer__{key}" in passed and key in group:
                    group[key] = float(getattr(self, key))
        criterion = net.criterion_
        criterion.amplitude = float(self.amplitude)
        criterion.period = self._period(len(self.classes_))
        criterion.shape = self.shape
        criterion.order = self.order
        callbacks = dict(net.callbacks_)
        callbacks["loss_clock"].static_last_period = self.static_last_period
        callbacks["progress_bar"].verbose = int(self.verbose)
        if "sharpness_tracker" in callbacks:
            callbacks["sharpness_tracker"].threshold = self._thresholds()
        if "early_stopping" in callbacks:
            callbacks["early_stopping"].patience = int(self.n_iter_no_change)
            callbacks["early_stopping"].tol = float(self.tol)
        self._built_params = params

    def _snapshot(self):
        """What a continuing call changes in the net, to put back if it fails."""
        net = self.net_
        callbacks = dict(net.callbacks_)
        return {
            "module": _cloned(net.module_.state_dict()),
            "optimizer": _cloned(net.optimizer_.state_dict()),
            "criterion": {
                key: getattr(net.criterion_, key)
                for key in ("amplitude", "period", "shape", "order", "time", "static")
            },
            "weights": net.criterion_.weights.clone(),
            "generator": net.generator.get_state(),
            "history": len(net.history),
            "batch_size": net.batch_size,
            "train_split": net.train_split,
            "callbacks": {name: dict(vars(cb)) for name, cb in callbacks.items()},
        }

    def _restore(self, snapshot):
        net = self.net_
        net.module_.load_state_dict(snapshot["module"])
        net.optimizer_.load_state_dict(snapshot["optimizer"])
        for key, value in snapshot["criterion"].items():
            setattr(net.criterion_, key, value)
        net.criterion_.weights.copy_(snapshot["weights"])
        net.generator.set_state(snapshot["generator"])
        del net.history[snapshot["history"] :]
        net.batch_size = snapshot["batch_size"]
        net.train_split = snapshot["train_split"]
        for name, cb in net.callbacks_:
            if name in snapshot["callbacks"]:
                cb.__dict__.clear()
                cb.__dict__.update(snapshot["callbacks"][name])

    def _validate_training_data(self, X, y, sample_weight, *, reset, dtype):
        X, y = validate_data(
            self, X, y, reset=reset, dtype=(np.float64, np.float32), y_numeric=False
        )
        check_classification_targets(y)
        X = self._in_training_dtype(X, dtype)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True
            )
            if np.all(sample_weight == sample_weight[0]):
                # Equal weights are no weights: every batch's loss is the same mean.
                sample_weight = None
            else:
                # The loss divides by the batch's total weight, so only ratios count:
                # scaled to at most 1, weights fit any training dtype (1e39 does not
                # fit float32), and those below its range are, relatively, zero.
                sample_weight = sample_weight / sample_weight.max()
        return X, y, sample_weight

    @staticmethod
    def _in_training_dtype(X, dtype):
        """X as the dtype the network computes in, checked to be finite there."""
        dtype = np.dtype(dtype)
        with np.errstate(over="ignore"):
            X = np.asarray(X, dtype=dtype)
        if not np.isfinite(X).all():
            raise ValueError(
                f"Input X contains infinity or a value too large for {dtype!r}, the "
                "dtype the network computes in (use dtype='float64' or rescale X)."
            )
        return X

    def _network_dtype(self):
        net = self.__dict__.get("net_")
        if net is not None:
            # The dtype the network was built with (the dtype hyperparameter may have
            # changed since; only a new fit applies it).
            return str(net.criterion_.weights.dtype).removeprefix("torch.")
        return self.dtype

    def _encode_labels(self, y, *, continuing, classes):
        if continuing:
            classes_ = self.classes_
            if classes is not None:
                given = np.unique(np.asarray(classes))
                if not np.array_equal(given, classes_):
                    raise ValueError(
                        f"classes={given.tolist()!r} is not the same as on the first "
                        f"call to partial_fit, was: {classes_.tolist()!r}."
                    )
            elif self.warm_start and not np.array_equal(np.unique(y), classes_):
                raise ValueError(
                    "warm_start can only be used where y has the same classes as in the "
                    f"previous call to fit. Previously got {classes_}, y has "
                    f"{np.unique(y)}."
                )
        else:
            source = y if classes is None else np.asarray(classes)
            if classes is not None:
                check_classification_targets(source)
                if source.dtype.kind == "f" and np.isnan(source).any():
                    raise ValueError("classes must not contain NaN.")
            classes_ = np.unique(source)
            if len(classes_) < 2:
                raise ValueError(
                    "DynamicalLossClassifier needs samples of at least 2 classes in the "
                    f"data, but the data contain only one class: {classes_[0]!r}."
                )
        unseen = np.setdiff1d(y, classes_)
        if unseen.size:
            raise ValueError(
                f"y contains labels {unseen.tolist()} that are not in classes_ "
                f"{classes_.tolist()}."
            )
        return np.searchsorted(classes_, y), classes_

    def _validating(self, params=None):
        """Whether early stopping holds out a validation split (of the hyperparameters
        ``params``, the current ones when None)."""
        params = self.get_params(deep=False) if params is None else params
        return bool(params["early_stopping"]) and (
            params["validation_fraction"] is not None
        )

    def _split(self, X, y, sample_weight):
        """The training rows, and the validation rows held out for early stopping."""
        if not self._validating():
            return X, y, sample_weight, None
        seed = self._seeds[3]
        idx = np.arange(len(X))
        try:
            train, valid = train_test_split(
                idx,
                test_size=self.validation_fraction,
                stratify=y,
                random_state=seed,
            )
        except ValueError as exc:
            raise ValueError(
                f"early_stopping=True holds out validation_fraction="
                f"{self.validation_fraction} of the {len(X)} training samples, "
                f"stratified by class, which is not possible here: {exc}"
            ) from exc
        w = None if sample_weight is None else sample_weight[train]
        return X[train], y[train], w, (X[valid], y[valid], None)

    @staticmethod
    def _to_tensors(X, y, sample_weight, device, dtype):
        dtype = _DTYPES[dtype]
        # torch.tensor copies: the network never sees (or edits) the caller's array.
        X_t = torch.tensor(X, dtype=dtype, device=device)
        y_t = torch.tensor(y, dtype=torch.long, device=device)
        w_t = None
        if sample_weight is not None:
            w_t = torch.tensor(sample_weight, dtype=dtype, device=device)
        return X_t, y_t, w_t

    def _make_module(self, n_features, n_classes, device):
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        if self.module == "mlp":
            self._check_size(MLP.n_parameters(n_features, n_classes, hidden), device)
            return MLP(n_features, n_classes, hidden)
        if self.module == "cnn":
            image_shape = self.image_shape
            if image_shape is None:
                side = int(round(np.sqrt(n_features)))
                if side * side != n_features:
                    raise ValueError(
                        "module='cnn' needs image_shape=(channels, height, width): "
                        f"{n_features} features are not a square image."
                    )
                image_shape = (1, side, side)
            if n_image_features(image_shape) != n_features:
                raise ValueError(
                    f"image_shape={tuple(image_shape)} does not match the {n_features}"
                    " features of each row of X: their product must equal n_features."
                )
            self._check_size(CNN.n_parameters(image_shape, n_classes, hidden), device)
            return CNN(image_shape, n_classes, hidden)
        if self.module == "cnn1d":
            channels = int(self.signal_channels)
            self._check_size(
                CNN1D.n_parameters(n_features, n_classes, hidden, channels), device
            )
            return CNN1D(n_features, n_classes, hidden, channels)
        if isinstance(self.module, torch.nn.Module):
            raise TypeError(
                "module must be 'mlp', 'cnn', 'cnn1d', or a class (or factory) called as "
                "module(n_features=..., n_classes=...); got a module instance. Pass its "
                "class, e.g. functools.partial(MyNet, width=64)."
            )
        net = self.module(n_features=n_features, n_classes=n_classes)
        if not isinstance(net, torch.nn.Module):
            raise TypeError(
                f"module(n_features, n_classes) must return a torch.nn.Module, got "
                f"{type(net).__name__}."
            )
        return net

    def _check_size(self, n_parameters, device):
        """A clear error, not an allocation, for a network that cannot fit in memory."""
        itemsize = torch.finfo(_DTYPES[self.dtype]).bits // 8
        # Parameters, gradients and up to two optimizer moments.
        needed = 4 * n_parameters * itemsize
        available = _available_memory(device)
        if n_parameters >= 2**40 or (available is not None and needed > available):
            raise ValueError(
                f"The network has {n_parameters:,} parameters and needs about "
                f"{needed / 2**30:.1f} GiB to train (parameters, gradients and the "
                f"optimizer's state in {self.dtype}), more than the "
                + (f"{available / 2**30:.1f} GiB" if available else "memory")
                + " available. Use smaller hidden_layer_sizes."
            )

    def _optimizer_spec(self, device):
        named = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
        cls = named.get(self.optimizer, self.optimizer)
        if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError(
                "optimizer must be 'sgd', 'adam' or a torch.optim.Optimizer subclass, "
                f"got {self.optimizer!r}."
            )
        accepted = inspect.signature(cls).parameters
        kwargs = {}
        if "weight_decay" in accepted:
            kwargs["optimizer__weight_decay"] = float(self.weight_decay)
        if "momentum" in accepted and cls is not torch.optim.RMSprop:
            kwargs["optimizer__momentum"] = float(self.momentum)
        if cls in named.values():
            # torch's fastest kernel for the device: fused where torch has one (CPU and
            # CUDA), else the multi-tensor one.
            if "fused" in accepted and torch.device(device).type in ("cpu", "cuda"):
                kwargs["optimizer__fused"] = True
            elif "foreach" in accepted:
                kwargs["optimizer__foreach"] = True
        return cls, kwargs

    def _period(self, n_classes):
        """The period in epochs; ``"auto"``: two cycles through the classes per fit,
        then the static last period, ``max_epochs / (2 C + static_last_period)``."""
        if self.period == "auto":
            return int(self.max_epochs) / (2 * n_classes + int(self.static_last_period))
        return float(self.period)

    def _thresholds(self):
        """Gradient-descent stability threshold of the loss's curvature."""
        if self.optimizer == "sgd" or self.optimizer is torch.optim.SGD:
            # Heavy-ball momentum m is stable for lambda < (2 + 2 m) / lr.
            return (2.0 + 2.0 * self.momentum) / self.lr
        return float("nan")

    def _build(self, n_features, classes_, device):
        n_classes = len(classes_)
        self._seeds = seeds = fit_seeds(self.random_state)
        init_seed, shuffle_seed, sharpness_seed, _ = seeds
        dtype = _DTYPES[self.dtype]
        with _INIT_LOCK, torch.random.fork_rng(devices=[]):
            if device == "cpu":
                # The CPU generator is all a module built on the CPU draws from.
                torch.default_generator.manual_seed(init_seed)
            else:
                torch.manual_seed(init_seed)
            module = self._make_module(n_features, n_classes, device)
        module = module.to(dtype=dtype)
        if not any(p.requires_grad for p in module.parameters()):
            raise ValueError(
                f"The module {type(module).__name__} has no trainable parameters."
            )
        criterion = DynamicalLoss(
            n_classes,
            amplitude=float(self.amplitude),
            period=self._period(n_classes),
            shape=self.shape,
            order=self.order,
            random_state=shuffle_seed,
            base=self.loss,
        ).to(dtype=dtype)
        callbacks = [
            ("loss_clock", LossClock(static_last_period=self.static_last_period)),
            ("divergence_guard", DivergenceGuard()),
            ("progress_bar", ProgressBar(verbose=int(self.verbose))),
        ]
        if self.sharpness_every is not None:
            callbacks.append(
                (
                    "sharpness_tracker",
                    SharpnessTracker(
                        every=int(self.sharpness_every),
                        max_samples=int(self.sharpness_max_samples),
                        threshold=self._thresholds(),
                        random_state=sharpness_seed,
                    ),
                )
            )
        skorch_defaults = {
            # The progress bar replaces skorch's per-epoch log and timer; the
            # validation scores exist only with a validation split.
            "callbacks__epoch_timer": None,
            "callbacks__print_log": None,
            # The clock records train_loss with the rest of the epoch's record.
            "callbacks__train_loss": None,
        }
        if self.early_stopping:
            # On the validation accuracy, or (validation_fraction=None) on the plain
            # base loss of the training data: the dynamical loss itself rises and
            # falls by design as the focus moves.
            validating = self._validating()
            callbacks.append(
                (
                    "early_stopping",
                    CycleEarlyStopping(
                        monitor="valid_acc" if validating else "train_base_loss",
                        lower_is_better=not validating,
                        patience=int(self.n_iter_no_change),
                        tol=float(self.tol),
                        restore_best=validating,
                    ),
                )
            )
        if not self._validating():
            skorch_defaults.update(
                callbacks__valid_loss=None, callbacks__valid_acc=None
            )
        for i, cb in enumerate(copy.deepcopy(self.callbacks or [])):
            callbacks.append(cb if isinstance(cb, tuple) else (f"user_{i}", cb))
        optimizer, optimizer_kwargs = self._optimizer_spec(device)
        net = DynamicalNet(
            module=module,
            criterion=criterion,
            optimizer=optimizer,
            lr=float(self.lr),
            batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs),
            train_split=None,
            callbacks=callbacks,
            device=device,
            generator=torch.Generator().manual_seed(shuffle_seed),
            verbose=0,
            **skorch_defaults,
            **optimizer_kwargs,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            net.initialize()
        self._built_params = self.get_params(deep=False)
        return net

    def _check_module_output(self, net, X_t, n_classes):
        """A custom module's output, checked once on a small batch before training."""
        module = net.module_
        name = type(module).__name__
        sample = X_t[: min(2, len(X_t))].clone()
        was_training = module.training
        try:
            # Eval mode: no dropout draw and no batch-norm statistics updated before
            # training starts.
            with torch.enable_grad(), torch.inference_mode(False):
                module.eval()
                out = module(sample)
        except Exception as exc:
            raise ValueError(
                f"The module {name} failed on a batch of shape {tuple(sample.shape)} "
                f"({X_t.dtype}, {X_t.device}): {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            module.train(was_training)
        problem = None
        if not isinstance(out, torch.Tensor):
            problem = f"returned {type(out).__name__}, not a tensor"
        elif out.shape != (len(sample), n_classes):
            problem = (
                f"returned shape {tuple(out.shape)} for {len(sample)} rows, not "
                f"({len(sample)}, {n_classes}) (one output per class)"
            )
        elif not out.is_floating_point():
            problem = f"returned {out.dtype}, not a floating-point tensor"
        elif out.device != X_t.device:
            problem = f"returned a tensor on {out.device}, not on {X_t.device}"
        elif not out.requires_grad:
            problem = (
                "returned a tensor that is not attached to the autograd graph of its "
                "parameters (detached, or computed without gradients)"
            )
        elif not torch.isfinite(out).all():
            problem = "returned non-finite values (NaN or inf) at initialisation"
        if problem:
            raise ValueError(f"The module {name} {problem}.")
        check_loss_callable(
            self.loss, out, torch.arange(len(sample), device=out.device) % n_classes
        )

    def _check_time(self, net, epochs):
        """Extreme periods fail here, before training, not deep in the schedule."""
        history = net.history
        start = history[-1].get("loss_time", 0.0) if len(history) else 0.0
        periods = (start + epochs) / net.criterion_.period
        if not math.isfinite(periods) or periods >= 2.0**52:
            raise _invalid(
                "period",
                f"large enough that the fit's {start + epochs:g} epochs span fewer than "
                "2**52 periods (the clock counts periods exactly)",
                self.period,
            )

    def _warn_if_static(self, period, epochs):
        """Warn when ``static_last_period`` makes the whole call the plain base loss."""
        if epochs > 1 and self.static_last_period and period >= epochs:
            warnings.warn(
                f"period={period:g} >= max_epochs={epochs} with "
                "static_last_period=True: the whole fit trains with the plain "
                + ("cross-entropy" if self.loss == "cross_entropy" else "base loss")
                + ". Use more epochs, a shorter period, or static_last_period=False.",
                UserWarning,
                stacklevel=5,
            )

    def _fitted_state(self, net, data, classes_, *, continuing):
        """The fitted attributes of the call, in a dict (nothing is set yet)."""
        X_t, y_t, w_t = data
        state = {
            "classes_": classes_,
            "net_": net,
            "module_": net.module_,
            "device_": str(net.device),
            "n_iter_": len(net.history),
            "period_": net.criterion_.period,
            "diverged_": dict(net.callbacks_)["divergence_guard"].diverged_,
        }
        if self.compute_sharpness:
            state.update(self._compute_sharpness(net.module_, data))
        else:
            state["sharpness_"] = float("nan")
            state["sharpness_info_"] = {}
        # Last, so that nothing can fail after the record has grown: the record grows
        # by appending the call's epochs (a new fit starts a new one).
        record = self._epochs if continuing else _Record(len(classes_), self.loss)
        n_before = len(record)
        try:
            record.sync(net.history)
        except BaseException:
            record.truncate(n_before)
            raise
        state["_epochs"] = record
        if self._validating():
            state["validation_scores_"] = list(record.validation)
            state["best_validation_score_"] = (
                max(record.validation) if record.validation else None
            )
        else:
            state["validation_scores_"] = None
            state["best_validation_score_"] = None
        return state

    def _compute_sharpness(self, module, data):
        X_t, y_t, w_t = data
        idx = SharpnessTracker.subsample(
            len(X_t), int(self.sharpness_max_samples), self._seeds[2]
        )
        if idx is not None:
            idx = idx.to(X_t.device)
            X_t, y_t = X_t[idx], y_t[idx]
            w_t = None if w_t is None else w_t[idx]
        value, info = top_hessian_eigenvalue(
            module,
            weighted_mean_loss(self.loss, w_t),
            X_t,
            y_t,
            random_state=self._seeds[2],
        )
        if "error" in info:
            warnings.warn(
                f"sharpness_ could not be computed ({info['error']}); the curvature of "
                f"the loss is probably beyond the range of {self._network_dtype()}. "
                "sharpness_ is NaN.",
                RuntimeWarning,
                stacklevel=5,
            )
        return {"sharpness_": value, "sharpness_info_": info}

    # --------------------------------------------------------------- prediction

    def _outputs(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        dtype = self._network_dtype()
        X = self._in_training_dtype(X, dtype)
        X_t = torch.tensor(X, dtype=_DTYPES[dtype], device=self.device_)
        with torch.inference_mode(), torch_threads(self._threads(X, training=False)):
            out = self.net_.forward(X_t, training=False, device=self.device_)
        if not torch.isfinite(out).all():
            raise ValueError(
                "The network's outputs are not finite for some rows of X (NaN or "
                "infinity): the inputs are far outside the range it was trained on."
            )
        return out

    def predict_proba(self, X):
        """Class probabilities: the softmax of the network's outputs (for the squared
        errors, the outputs clipped at 0 and normalised).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``.
        """
        # In float64, so that rows sum to one to double precision.
        outputs = self._outputs(X).to(torch.float64)
        return probabilities(outputs, self.loss).cpu().numpy()

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_`` (the original labels, of their original type).
        """
        indices = self._outputs(X).argmax(dim=1).cpu().numpy()
        return self.classes_[indices]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # Persistence. Pickle, copy and joblib keep the whole object, skorch net and all
    # (__reduce_ex__, the tuple object.__reduce_ex__ makes). skops, which stores no
    # code and has no handler for torch objects, stores __getstate__: the contents
    # skdynloss.save writes, as a JSON text and numpy arrays; __setstate__ rebuilds
    # the estimator from them after load's checks (see _skops.py).
    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), BaseEstimator.__getstate__(self)

    def __reduce__(self):
        return self.__reduce_ex__(2)

    def __getstate__(self):
        from ._skops import plain_state

        return plain_state(self)

    def __setstate__(self, state):
        from ._skops import set_state

        set_state(self, state, super().__setstate__)
