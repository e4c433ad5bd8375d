"""DynamicalLossClassifier: a scikit-learn classifier trained with a dynamical loss."""

import copy
import inspect
import threading
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._callbacks import DivergenceGuard, LossClock, SharpnessTracker
from ._losses import DynamicalCrossEntropy
from ._modules import CNN, MLP, n_image_features
from ._net import DynamicalNet
from ._optim import FlatAdam, FlatSGD
from ._sharpness import hessian_eigenvalues

# Module construction draws from torch's global RNG; a lock plus fork_rng makes the
# seeded initialisation of concurrent fits in threads (joblib's threading backend)
# independent of each other and leaves the caller's global RNG untouched.
_INIT_LOCK = threading.Lock()

# The named optimizers update all parameters as one flat buffer: torch's arithmetic,
# without its per-tensor Python (see _optim.py).
_OPTIMIZERS = {"sgd": FlatSGD, "adam": FlatAdam}
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


def _resolve_device(device):
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine;"
            " use device='auto' to fall back to the CPU."
        )
    return str(parsed)


class DynamicalLossClassifier(ClassifierMixin, BaseEstimator):
    """Neural network classifier trained with a dynamical loss function.

    A PyTorch MLP or CNN, trained through skorch, whose loss is a cross-entropy with
    class weights that oscillate during training so that one class at a time is
    emphasised (Ruiz-Garcia et al., 2021):

    .. math:: F(t) = \\frac{1}{P} \\sum_{\\mu} \\Gamma_{y_\\mu}(t)\\, CE(f(x_\\mu), y_\\mu).

    The weight of the class in focus follows ``shape`` over each ``period`` epochs (peak
    raw weight ``amplitude``), the weights always sum to the number of classes, and the
    focus moves through ``classes_`` in order. ``amplitude=1`` is plain cross-entropy.

    Parameters
    ----------
    amplitude : float, default=10.0
        Peak raw weight A >= 1 of the class in focus; 1 gives plain cross-entropy.
    period : float, default=10.0
        Epochs spent on each class (T). The clock advances by 1/steps_per_epoch at every
        optimizer step, so a period may be fractional.
    shape : {"triangle", "sine"} or callable, default="triangle"
        Raw weight of the focus class over one period: the paper's triangle
        ``1 -> A -> 1``, a smooth ``1 + (A - 1) sin^2(pi tau / T)``, or a callable
        ``shape(tau / T, amplitude) -> positive float``. The raw weights (focus ``w``,
        others 1) are normalised to sum to the number of classes.
    order : {"cyclic", "random"}, default="cyclic"
        Order in which classes take the focus: that of ``classes_`` (the paper's), or a
        random permutation per cycle, seeded by ``random_state``.
    static_last_period : bool, default=True
        Train the last ``period`` epochs of every ``fit`` with plain cross-entropy, as the
        paper does. Not applied by ``partial_fit``, whose end is unknown.
    module : {"mlp", "cnn"} or callable, default="mlp"
        The network. A callable (for instance a ``torch.nn.Module`` subclass) is called
        as ``module(n_features=..., n_classes=...)`` and must return a module that maps a
        float tensor of shape (n, n_features) to logits of shape (n, n_classes).
    hidden_layer_sizes : tuple of int, default=(100,)
        Widths of the hidden layers of the MLP, or of the dense head of the CNN.
    image_shape : tuple of int, default=None
        For ``module="cnn"``: the ``(channels, height, width)`` each row of X is reshaped
        to. None infers ``(1, s, s)`` when n_features is a perfect square ``s * s``.
    optimizer : {"sgd", "adam"} or torch optimizer class, default="adam"
        The optimizer. ``"sgd"`` with ``momentum=0`` and ``batch_size=-1`` is plain
        gradient descent, the paper's setting. ``"sgd"`` and ``"adam"`` compute
        exactly what ``torch.optim.SGD`` and ``torch.optim.Adam`` (``foreach=False``)
        compute, bit for bit, with all parameters held in one flat buffer so that a
        step is a few tensor operations (the optimizer is ``net_.optimizer_``). A torch
        optimizer class, e.g. ``torch.optim.AdamW``, is used as it is.
    lr : float, default=1e-3
        Learning rate.
    momentum : float, default=0.9
        Heavy-ball momentum of ``"sgd"`` (ignored by other optimizers).
    weight_decay : float, default=0.0
        L2 penalty passed to the optimizer.
    batch_size : int, default=64
        Mini-batch size; ``-1`` means full-batch gradient descent (skorch's convention),
        as in the paper.
    max_epochs : int, default=100
        Epochs per ``fit`` (``partial_fit`` runs one).
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU. Resolved into ``device_``.
    dtype : {"float32", "float64"}, default="float32"
        Floating point type of the network and data; the paper used float64.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling and the sharpness subsample of each fit.
        An int gives bit-identical results on the CPU, also for fits run in parallel.
    warm_start : bool, default=False
        Continue training the fitted network on ``fit`` (the clock resumes), with
        the current ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
        ``amplitude``, ``period``, ``shape``, ``order``, ``static_last_period``,
        ``max_epochs`` and ``compute_sharpness``. Changing what the first fit built
        (``module``, ``hidden_layer_sizes``, ``image_shape``, ``optimizer``,
        ``device``, ``dtype``, ``callbacks``, ``verbose``, ``sharpness_every``,
        ``sharpness_max_samples``) is an error; ``random_state`` only seeds new fits.
    compute_sharpness : bool, default=True
        Compute ``sharpness_`` after each ``fit`` and ``partial_fit`` call (about a
        dozen Hessian-vector products over at most ``sharpness_max_samples`` rows);
        turn it off when calling ``partial_fit`` many times.
    sharpness_max_samples : int, default=2048
        Rows of the training data (a seeded random subsample when there are more) over
        which ``sharpness_`` and ``sharpness_history_`` are computed.
    sharpness_every : int or None, default=None
        Every so many epochs, record the top Hessian eigenvalue of the loss being
        minimised and of plain cross-entropy in ``sharpness_history_``.
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        Extra skorch callbacks, deep-copied for every fit.
    verbose : int, default=0
        Print skorch's per-epoch log when positive.

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
        The trained network; it maps rows of X, as given, to logits.
    device_ : str
        Device the network lives on.
    n_iter_ : int
        Epochs trained in total.
    loss_curve_ : list of float
        The dynamical loss of each epoch (mean over its steps).
    class_weights_ : ndarray of shape (`n_iter_`, n_classes)
        Class weights applied in each epoch (mean over its steps).
    dynamics_ : dict of ndarray
        Per-epoch record for the paper's Fig. 4: ``epoch``, ``time`` (clock at the end of
        the epoch), ``loss`` (dynamical), ``cross_entropy``, ``accuracy`` (training, as
        measured during the epoch), ``class_weights``.
    sharpness_ : float
        Largest eigenvalue of the Hessian of the unweighted mean cross-entropy over the
        training data (at most ``sharpness_max_samples`` rows) at the fitted parameters,
        in eval mode. NaN when ``compute_sharpness=False``.
    sharpness_info_ : dict
        How ``sharpness_`` was computed: ``n_samples``, ``n_matvec`` (Hessian-vector
        products), ``residual``, ``converged``.
    sharpness_history_ : dict of ndarray
        With ``sharpness_every``: ``epoch``, ``dynamical`` (top eigenvalue of the loss
        being minimised), ``cross_entropy`` and ``threshold`` (2/lr for gradient
        descent, (2 + 2 momentum)/lr with heavy-ball momentum, NaN for adaptive
        optimizers).
    diverged_ : bool
        Whether training stopped because the loss became non-finite (the parameters of
        the last finite epoch were kept).

    See Also
    --------
    DynamicalCrossEntropy : the loss as a torch module.
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
        "period": [Interval(Real, 0, None, closed="neither")],
        "shape": [StrOptions({"triangle", "sine"}), callable],
        "order": [StrOptions({"cyclic", "random"})],
        "static_last_period": ["boolean"],
        "module": [StrOptions({"mlp", "cnn"}), callable],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "image_shape": [tuple, list, None],
        "optimizer": [StrOptions({"sgd", "adam"}), callable],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            Options(Integral, {-1}),
        ],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "compute_sharpness": ["boolean"],
        "sharpness_max_samples": [Interval(Integral, 1, None, closed="left")],
        "sharpness_every": [Interval(Integral, 1, None, closed="left"), None],
        "callbacks": [list, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        amplitude=10.0,
        period=10.0,
        shape="triangle",
        order="cyclic",
        static_last_period=True,
        module="mlp",
        hidden_layer_sizes=(100,),
        image_shape=None,
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=64,
        max_epochs=100,
        device="auto",
        dtype="float32",
        random_state=None,
        warm_start=False,
        compute_sharpness=True,
        sharpness_max_samples=2048,
        sharpness_every=None,
        callbacks=None,
        verbose=0,
    ):
        self.amplitude = amplitude
        self.period = period
        self.shape = shape
        self.order = order
        self.static_last_period = static_last_period
        self.module = module
        self.hidden_layer_sizes = hidden_layer_sizes
        self.image_shape = image_shape
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.compute_sharpness = compute_sharpness
        self.sharpness_max_samples = sharpness_max_samples
        self.sharpness_every = sharpness_every
        self.callbacks = callbacks
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the network on (X, y) for ``max_epochs`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels (any type ``np.unique`` can sort).

        Returns
        -------
        self : DynamicalLossClassifier
            The fitted estimator.
        """
        continuing = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, continuing=continuing, epochs=self.max_epochs)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Train for one epoch on (X, y), continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.
        classes : array-like of shape (n_classes,), default=None
            All the classes that can appear in y. Required on the first call.

        Returns
        -------
        self : DynamicalLossClassifier
            The fitted estimator.
        """
        continuing = hasattr(self, "net_")
        if not continuing and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, continuing=continuing, epochs=1, classes=classes)

    def _fit(self, X, y, *, continuing, epochs, classes=None):
        # validate -> encode labels -> build -> train -> record
        try:
            X, y = self._validate_training_data(X, y, reset=not continuing)
            y_encoded = self._encode_labels(y, continuing=continuing, classes=classes)
            if continuing:
                self._update_built(X.shape[1])
            X_t, y_t = self._to_tensors(X, y_encoded, continuing=continuing)
            if not continuing:
                self._build(X_t.shape[1])
        except BaseException:
            if not continuing:
                # A failed fresh fit must not leave new classes_ beside an old net_,
                # which would predict silently wrong labels: back to unfitted.
                self._forget_fit()
            raise
        self._train(X_t, y_t, epochs=epochs, static=epochs is not None and epochs > 1)
        self._record(X_t, y_t)
        return self

    #: Hyperparameters that define what the first fit built (the network, its device,
    #: dtype and optimizer class, the callbacks); a warm start cannot change them.
    _STRUCTURAL = (
        "module",
        "hidden_layer_sizes",
        "image_shape",
        "optimizer",
        "device",
        "dtype",
        "callbacks",
        "verbose",
        "sharpness_every",
        "sharpness_max_samples",
    )

    def _update_built(self, n_features):
        """Carry hyperparameters changed since the network was built into it."""
        built = getattr(self, "_built_params", None)
        if built is None:
            return
        params = self.get_params(deep=False)
        changed = [k for k in self._STRUCTURAL if not _same(params[k], built[k])]
        if changed:
            raise ValueError(
                f"warm_start=True continues the network built by the first fit, but "
                f"{', '.join(changed)} changed since then. Fit with warm_start=False "
                "to build a new one."
            )
        net = self.net_
        net.batch_size = self.batch_size
        for group in net.optimizer_.param_groups:
            group["lr"] = self.lr
            for key in ("momentum", "weight_decay"):
                if key in group:
                    group[key] = getattr(self, key)
        criterion = net.criterion_
        criterion.amplitude = float(self.amplitude)
        criterion.period = float(self.period)
        criterion.shape = self.shape
        criterion.order = self.order
        callbacks = dict(net.callbacks_)
        callbacks["loss_clock"].static_last_period = self.static_last_period
        if "sharpness_tracker" in callbacks:
            callbacks["sharpness_tracker"].threshold = self._thresholds()
        self._built_params = params

    def _forget_fit(self):
        for name in [
            k for k in vars(self) if k.endswith("_") and not k.startswith("__")
        ]:
            delattr(self, name)

    def _validate_training_data(self, X, y, *, reset):
        X, y = validate_data(
            self, X, y, reset=reset, dtype=(np.float64, np.float32), y_numeric=False
        )
        check_classification_targets(y)
        return X, y

    def _encode_labels(self, y, *, continuing, classes):
        if not continuing:
            self.classes_ = np.unique(y if classes is None else np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(
                    "DynamicalLossClassifier needs samples of at least 2 classes in the "
                    f"data, but the data contain only one class: {self.classes_[0]!r}."
                )
        elif (
            self.warm_start
            and classes is None
            and not np.array_equal(np.unique(y), self.classes_)
        ):
            raise ValueError(
                "warm_start can only be used where y has the same classes as in the "
                f"previous call to fit. Previously got {self.classes_}, y has "
                f"{np.unique(y)}."
            )
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            raise ValueError(
                f"y contains labels {unseen.tolist()} that are not in classes_ "
                f"{self.classes_.tolist()}."
            )
        return np.searchsorted(self.classes_, y)

    def _to_tensors(self, X, y_encoded, *, continuing):
        if not continuing:
            self.device_ = _resolve_device(self.device)
        dtype = _DTYPES[self.dtype]
        if (
            self.device_ == "cpu"
            and X.flags.writeable
            and X.flags.c_contiguous
            and X.dtype == np.dtype(self.dtype)
        ):
            # Training only reads X: share the validated array instead of holding a
            # second copy of the data for the whole fit.
            X_t = torch.from_numpy(X)
        else:
            # torch.tensor copies; read-only (memory-mapped) inputs warn otherwise.
            X_t = torch.tensor(X, dtype=dtype, device=self.device_)
        y_t = torch.tensor(y_encoded, dtype=torch.long, device=self.device_)
        return X_t, y_t

    def _make_module(self, n_features, n_classes):
        hidden = tuple(int(h) for h in np.atleast_1d(self.hidden_layer_sizes))
        if self.module == "mlp":
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
            if not 2 <= len(image_shape) <= 3 or n_image_features(image_shape) != (
                n_features
            ):
                raise ValueError(
                    f"image_shape={tuple(image_shape)} does not match the {n_features}"
                    " features of each row of X: their product must equal n_features."
                )
            return CNN(image_shape, n_classes, hidden)
        if isinstance(self.module, torch.nn.Module):
            raise TypeError(
                "module must be 'mlp', 'cnn', or a class (or factory) called as "
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

    def _make_optimizer(self):
        cls = _OPTIMIZERS.get(self.optimizer, self.optimizer)
        if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError(
                "optimizer must be 'sgd', 'adam' or a torch.optim.Optimizer subclass, "
                f"got {self.optimizer!r}."
            )
        accepted = inspect.signature(cls).parameters
        kwargs = {}
        if "weight_decay" in accepted:
            kwargs["optimizer__weight_decay"] = self.weight_decay
        if "momentum" in accepted and cls is not torch.optim.RMSprop:
            kwargs["optimizer__momentum"] = self.momentum
        return cls, kwargs

    def _thresholds(self):
        """Gradient-descent stability threshold of the loss's curvature."""
        if self.optimizer == "sgd" or self.optimizer is torch.optim.SGD:
            # Heavy-ball momentum m is stable for lambda < (2 + 2 m) / lr.
            return (2.0 + 2.0 * self.momentum) / self.lr
        return float("nan")

    def _build(self, n_features):
        n_classes = len(self.classes_)
        rng = check_random_state(self.random_state)
        init_seed, shuffle_seed, self._sharpness_seed = (
            int(s) for s in rng.randint(np.iinfo(np.int32).max, size=3)
        )
        with _INIT_LOCK, torch.random.fork_rng(devices=[]):
            if self.device_ == "cpu":
                # The CPU generator is all a module built on the CPU draws from;
                # torch.manual_seed also queues seeds for absent accelerators (about
                # half a millisecond per fit without CUDA).
                torch.default_generator.manual_seed(init_seed)
            else:
                torch.manual_seed(init_seed)
            module = self._make_module(n_features, n_classes)
        module = module.to(dtype=_DTYPES[self.dtype])
        criterion = DynamicalCrossEntropy(
            n_classes,
            amplitude=self.amplitude,
            period=self.period,
            shape=self.shape,
            order=self.order,
            random_state=shuffle_seed,
        ).to(dtype=_DTYPES[self.dtype])
        generator = torch.Generator().manual_seed(shuffle_seed)
        callbacks = [
            ("loss_clock", LossClock(static_last_period=self.static_last_period)),
            ("divergence_guard", DivergenceGuard()),
        ]
        if self.sharpness_every is not None:
            callbacks.append(
                (
                    "sharpness_tracker",
                    SharpnessTracker(
                        every=self.sharpness_every,
                        max_samples=self.sharpness_max_samples,
                        threshold=self._thresholds(),
                        random_state=self._sharpness_seed,
                    ),
                )
            )
        for i, cb in enumerate(copy.deepcopy(self.callbacks or [])):
            callbacks.append(cb if isinstance(cb, tuple) else (f"user_{i}", cb))
        if self.verbose:
            from skorch.callbacks import EpochTimer, PrintLog

            # The per-class weights are in class_weights_; one row each is unreadable.
            log = PrintLog(keys_ignored=["class_weights"])
            callbacks += [("epoch_timer", EpochTimer()), ("print_log", log)]
        optimizer, optimizer_kwargs = self._make_optimizer()
        self.net_ = DynamicalNet(
            module=module,
            criterion=criterion,
            optimizer=optimizer,
            lr=self.lr,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            train_split=None,
            callbacks=callbacks,
            device=self.device_,
            generator=generator,
            # PrintLog prints only when the net itself is verbose.
            verbose=self.verbose,
            **optimizer_kwargs,
        )
        self.net_.initialize()
        self._built_params = self.get_params(deep=False)

    def _train(self, X_t, y_t, *, epochs, static):
        if static and self.static_last_period and self.period >= epochs:
            warnings.warn(
                f"period={self.period} >= max_epochs={epochs} with "
                "static_last_period=True: the whole fit trains with plain "
                "cross-entropy. Use more epochs, a shorter period, or "
                "static_last_period=False.",
                UserWarning,
                stacklevel=3,
            )
        callbacks = dict(self.net_.callbacks_)
        callbacks["loss_clock"].epochs = epochs if static else None
        if "sharpness_tracker" in callbacks:
            callbacks["sharpness_tracker"].set_data(X_t, y_t)
        try:
            self.net_.partial_fit(X_t, y_t, epochs=epochs)
        finally:
            if "sharpness_tracker" in callbacks:
                callbacks["sharpness_tracker"].set_data(None, None)
        self.diverged_ = callbacks["divergence_guard"].diverged_

    def _record(self, X_t, y_t):
        history = self.net_.history
        self.module_ = self.net_.module_
        self.n_iter_ = len(history)
        rows = list.__getitem__(history, slice(None))
        self.loss_curve_ = [row["train_loss"] for row in rows]
        self.class_weights_ = np.array(
            [row["class_weights"] for row in rows], dtype=float
        ).reshape(len(rows), len(self.classes_))
        self.dynamics_ = {
            "epoch": np.arange(1, len(rows) + 1),
            "time": np.array([row["loss_time"] for row in rows], dtype=float),
            "loss": np.array(self.loss_curve_, dtype=float),
            "cross_entropy": np.array(
                [row["train_cross_entropy"] for row in rows], dtype=float
            ),
            "accuracy": np.array([row["train_accuracy"] for row in rows], dtype=float),
            "class_weights": self.class_weights_,
        }
        tracked = [row for row in rows if "sharpness_dynamical" in row]
        self.sharpness_history_ = {
            "epoch": np.array([row["epoch"] for row in tracked], dtype=int),
            "dynamical": np.array([row["sharpness_dynamical"] for row in tracked]),
            "cross_entropy": np.array(
                [row["sharpness_cross_entropy"] for row in tracked]
            ),
            "threshold": np.array([row["stability_threshold"] for row in tracked]),
        }
        if self.compute_sharpness:
            self._compute_sharpness(X_t, y_t)
        else:
            self.sharpness_ = float("nan")
            self.sharpness_info_ = {}

    def _compute_sharpness(self, X_t, y_t):
        idx = SharpnessTracker.subsample(
            len(X_t), self.sharpness_max_samples, self._sharpness_seed
        )
        Xs, ys = (X_t, y_t) if idx is None else (X_t[idx], y_t[idx])
        result = hessian_eigenvalues(
            self.module_,
            torch.nn.functional.cross_entropy,
            Xs,
            ys,
            k=1,
            tol=SharpnessTracker.tol,
            random_state=self._sharpness_seed,
        )
        self.sharpness_ = float(result.eigenvalues[0])
        self.sharpness_info_ = {
            "n_samples": len(Xs),
            "n_matvec": int(result.n_matvec),
            "residual": float(result.residuals[0]),
            "converged": bool(result.converged),
        }

    # --------------------------------------------------------------- prediction

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        # The dtype the network was built with (the dtype hyperparameter may have
        # changed since; only a new fit applies it).
        dtype = self.net_.criterion_.weights.dtype
        X_t = torch.tensor(X, dtype=dtype, device=self.device_)
        return self.net_.forward(X_t, training=False, device=self.device_)

    def predict_proba(self, X):
        """Class probabilities (softmax of the network's logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``.
        """
        logits = self._logits(X)
        # Softmax in float64, so that rows sum to one to double precision.
        return torch.softmax(logits.to(torch.float64), dim=1).cpu().numpy()

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
        indices = self._logits(X).argmax(dim=1).cpu().numpy()
        return self.classes_[indices]
