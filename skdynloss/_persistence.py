"""Safe persistence: a fitted estimator saved as data, loaded without running code.

:func:`save` writes one file with :func:`torch.save`: a dict of tensors (the network's
parameters and buffers, the optimizer's state, the shuffling generator's state) and one
JSON text (the hyperparameters, ``classes_``, the feature names, the clock, the skorch
history, the callbacks' counters, the seeds, the fitted attributes, the package
versions), with a SHA-256 checksum over a canonical serialisation of both.
:func:`load` reads it with ``torch.load(weights_only=True)``, torch's restricted
unpickler, which builds tensors and plain containers and refuses anything else, so a
file can neither name a class nor run code. The estimator is then rebuilt by its own
code path (the same builder ``fit`` uses) and its state loaded into it, so a loaded
model predicts identically and continues training (``warm_start``, ``partial_fit``)
exactly as the original would.

What cannot be data is refused when saving: a callable ``module``, ``shape`` or
``loss``, user callbacks, an optimizer class outside :mod:`torch.optim`.

A Pipeline's scalers are stored in the JSON text; its other steps as skops archives
(uint8 tensors), read within load's bounds by :mod:`skdynloss._skops`.
"""

import contextlib
import hashlib
import io
import json
import math
import os
import platform
import re
import tempfile
import warnings
import zipfile
from numbers import Integral, Real

import numpy as np
import sklearn
import skorch
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)
from sklearn.utils.validation import check_is_fitted

from ._classifier import DynamicalLossClassifier, _Record, _resolve_device

#: Written at the top of every file, and checked first on load.
FORMAT = "skdynloss-model"
#: Incremented whenever the layout changes; load reads every version up to this one.
#: 2: Pipeline steps stored as skops archives. A file is written in the lowest version
#: that holds it (1 without such steps), so earlier versions of skdynloss read it.
FORMAT_VERSION = 2
#: torch.load(weights_only=True) before 2.6 could be made to run code
#: (CVE-2025-32434); load refuses to rely on it there.
SAFE_TORCH = (2, 6)

#: Pipeline steps stored as data: their fitted state is a few plain arrays.
TRANSFORMERS = {
    cls.__name__: cls
    for cls in (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)
}

#: Top-level keys of a file, all of them required.
_KEYS = {"format", "format_version", "meta", "tensors", "sha256"}
#: Tensor dtypes a file may hold (what the estimator itself produces).
_DTYPES = {
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.int64,
    torch.int32,
    torch.bool,
}
#: The loss's settings and clock (its weights are a buffer, stored as a tensor).
_CRITERION = ("amplitude", "period", "shape", "order", "random_state", "time", "static")
_CRITERION_CHECKS = {
    "amplitude": lambda v: _finite(v) and v >= 1,
    "period": lambda v: _finite(v) and v > 0,
    "shape": lambda v: v in ("triangle", "sine"),
    "order": lambda v: v in ("cyclic", "random"),
    "random_state": lambda v: type(v) is int and 0 <= v < 2**32,
    "time": lambda v: _finite(v) and v >= 0,
    "static": lambda v: isinstance(v, bool),
}
_ATTRIBUTE = re.compile(r"^[a-z][a-z0-9_]*_$")
#: numpy dtypes the JSON text may name: plain numbers, strings, Python objects.
_NUMPY_DTYPE = re.compile(r"^[<>|=]?(?:[biuf]\d{1,2}|U\d{1,12}|O)$")
#: Nesting of the JSON text: save writes at most about 8 levels.
_MAX_DEPTH = 64
#: What the arrays of the JSON text may allocate: this plus 8 bytes per character of
#: the text (a number takes at least 2 characters and at most 8 bytes as an array).
_ARRAY_ALLOWANCE = 2**20
#: The records of a file torch.save writes (besides data/<key>, one per storage, and
#: torch's own metadata, whose names start with a dot and which it reads when needed).
_RECORDS = {
    "data.pkl",
    "version",
    ".format_version",
    ".storage_alignment",
    "byteorder",
    ".data/serialization_id",
}
#: The classifier's fitted attributes stored as they are (besides classes_ and
#: feature_names_in_; net_, module_ and the record are rebuilt).
_FITTED = (
    "n_features_in_",
    "n_iter_",
    "sharpness_",
    "sharpness_info_",
    "diverged_",
    "validation_scores_",
    "best_validation_score_",
    "device_",
)


# ------------------------------------------------------------------- plain data


def _encode(value, where, *, tensors=None, prefix=None):
    """``value`` as JSON-ready plain data (tuples, numpy values and a few types tagged),
    or a ValueError that says ``where`` the value that cannot be stored is."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and type(value) in (int, float):
        return value
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{where}: numpy {value.dtype} values cannot be stored.")
        return {"__numpy__": value.dtype.str, "value": value.item()}
    if isinstance(value, torch.Tensor):
        if tensors is None:
            raise ValueError(f"{where}: a tensor cannot be stored here.")
        tensors[prefix] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(value, tuple | list):
        items = [
            _encode(
                v,
                f"{where}[{i}]",
                tensors=tensors,
                prefix=None if prefix is None else f"{prefix}.{i}",
            )
            for i, v in enumerate(value)
        ]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str) or key.startswith("__"):
                raise ValueError(f"{where}: key {key!r} cannot be stored.")
            out[key] = _encode(
                v,
                f"{where}[{key!r}]",
                tensors=tensors,
                prefix=None if prefix is None else f"{prefix}.{key}",
            )
        return out
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            items = value.ravel().tolist()
            if not all(type(v) in (str, int, float, bool) for v in items):
                raise ValueError(
                    f"{where}: an object array holds values other than str, int, "
                    "float and bool."
                )
        elif value.dtype.kind not in "biufU":
            raise ValueError(f"{where}: arrays of {value.dtype} cannot be stored.")
        return {
            "__ndarray__": value.dtype.str,
            "shape": list(value.shape),
            "values": value.ravel().tolist(),
        }
    if isinstance(value, torch.device):
        return {"__torch_device__": str(value)}
    if isinstance(value, np.random.RandomState):
        name, keys, pos, has_gauss, cached = value.get_state()
        return {
            "__random_state__": [name, keys.tolist(), int(pos), int(has_gauss), cached]
        }
    raise ValueError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which "
        "cannot be stored as data."
    )


def _decode(value, where, *, tensors=None):
    """The inverse of :func:`_encode`; anything it did not write is a ValueError."""
    if value is None or isinstance(value, bool | str | int | float):
        return value
    if isinstance(value, list):
        return [
            _decode(v, f"{where}[{i}]", tensors=tensors) for i, v in enumerate(value)
        ]
    if not isinstance(value, dict):
        raise ValueError(f"{where}: unexpected {type(value).__name__}.")
    tags = [k for k in value if k.startswith("__")]
    if not tags:
        return {
            k: _decode(v, f"{where}[{k!r}]", tensors=tensors) for k, v in value.items()
        }
    try:
        (tag,) = tags
        if tag == "__tuple__":
            return tuple(_decode(value[tag], where, tensors=tensors))
        if tag == "__numpy__":
            dtype = _numpy_dtype(value[tag])
            if dtype.kind not in "biuf":
                raise ValueError(dtype)
            return dtype.type(value["value"])
        if tag == "__tensor__":
            return tensors[value[tag]]
        if tag == "__ndarray__":
            dtype = _numpy_dtype(value[tag])
            shape, values = value["shape"], value["values"]
            if not (
                isinstance(shape, list)
                and len(shape) <= 32
                and all(type(s) is int and s >= 0 for s in shape)
                and isinstance(values, list)
                and math.prod(shape) == len(values)
            ):
                raise ValueError("shape")
            shape = tuple(shape)
            if dtype.kind == "O":
                if not all(type(v) in (str, int, float, bool) for v in values):
                    raise ValueError(dtype)
                array = np.empty(len(values), dtype=object)
                array[:] = values
            elif dtype.kind in "biufU":
                array = np.array(values, dtype=dtype)
            else:
                raise ValueError(dtype)
            return array.reshape(shape)
        if tag == "__torch_device__":
            return torch.device(value[tag])
        if tag == "__random_state__":
            name, keys, pos, has_gauss, cached = value[tag]
            rng = np.random.RandomState()
            rng.set_state(
                (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
            )
            return rng
        if tag == "__torch_optim__":
            return _optimizer_class(value[tag])
    except ValueError as exc:
        raise ValueError(f"{where}: {value!r} is not valid stored data.") from exc
    except (KeyError, TypeError, RuntimeError, IndexError, OverflowError) as exc:
        raise ValueError(f"{where}: {value!r} is not valid stored data.") from exc
    raise ValueError(f"{where}: unknown tag {tags!r}.")


def _numpy_dtype(name):
    """A numpy dtype the JSON text may name (parsed only when it is one of them)."""
    if not isinstance(name, str) or not _NUMPY_DTYPE.match(name):
        raise ValueError(f"{name!r} is not a dtype save writes.")
    return np.dtype(name)


def _check_text(meta, length):
    """The parsed JSON text, checked before anything is built from it: nesting at most
    ``_MAX_DEPTH`` levels, and arrays that allocate at most ``_ARRAY_ALLOWANCE`` plus 8
    bytes per character of the text, all of them together (a string dtype such as
    ``"<U536870911"`` declares its size: it is refused, not allocated)."""
    budget = _ARRAY_ALLOWANCE + 8 * length
    stack = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(
                f"its JSON text is nested more than {_MAX_DEPTH} levels deep, which "
                "save never writes."
            )
        if isinstance(value, dict):
            if "__ndarray__" in value:
                try:
                    dtype = _numpy_dtype(value["__ndarray__"])
                    n = len(value["values"])
                except (ValueError, TypeError, KeyError):
                    raise ValueError(
                        f"its JSON text holds an array of dtype "
                        f"{str(value.get('__ndarray__'))[:40]!r}, which save never "
                        "writes."
                    ) from None
                budget -= n * (8 if dtype.kind == "O" else dtype.itemsize)
                if budget < 0:
                    raise ValueError(
                        f"its JSON text declares arrays (here {n} values of dtype "
                        f"{dtype.str!r}) larger than a file of its size can hold."
                    )
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _plain(value):
    """Whether ``value`` is plain data (stored as it is, no tags needed)."""
    try:
        _encode(value, "")
    except ValueError:
        return False
    return True


def _optimizer_class(name):
    """A torch.optim optimizer class by its name, and nothing else."""
    cls = getattr(torch.optim, name, None) if isinstance(name, str) else None
    if not (
        isinstance(cls, type)
        and issubclass(cls, torch.optim.Optimizer)
        and cls is not torch.optim.Optimizer
    ):
        raise ValueError(f"{name!r} is not an optimizer of torch.optim.")
    return cls


# ----------------------------------------------------------------- the estimator


def _encode_params(params, where):
    """Hyperparameters as data; a ValueError naming the one that is not."""
    out = {}
    for name, value in params.items():
        label = f"The {name!r} parameter{where}"
        if name in ("module", "shape", "loss") and not isinstance(value, str):
            raise ValueError(
                f"{label} is {_describe(value)}, code that save cannot store as data. "
                f"Save models whose {name} is one of the named options, or keep this "
                "one in a pickle or joblib file, which only trusted sources may load."
            )
        if name == "optimizer" and not isinstance(value, str):
            try:
                if _optimizer_class(getattr(value, "__name__", None)) is not value:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{label} is {_describe(value)}; save stores 'sgd', 'adam' or an "
                    "optimizer class of torch.optim (by its name), not other code."
                ) from None
            out[name] = {"__torch_optim__": value.__name__}
            continue
        if name == "callbacks" and value:
            raise ValueError(
                f"{label} holds skorch callbacks, which are objects with code that "
                "save cannot store as data. Set callbacks=None before saving (the "
                "fitted network does not need them to predict), or use a pickle or "
                "joblib file, which only trusted sources may load."
            )
        out[name] = _encode(value, label)
    return out


def _describe(value):
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    module = getattr(value, "__module__", None) or type(value).__module__
    return f"a callable ({module}.{name})"


def _classifier_state(clf, tensors, prefix, where=""):
    if type(clf) is not DynamicalLossClassifier:
        raise TypeError(
            f"save stores a DynamicalLossClassifier (or a Pipeline ending in one), got "
            f"{type(clf).__module__}.{type(clf).__qualname__}: a subclass's code "
            "cannot be stored as data."
        )
    check_is_fitted(clf)
    net = clf.net_
    state = {
        "params": _encode_params(clf.get_params(deep=False), where),
        "built_params": _encode_params(clf._built_params, f"{where} (as built)"),
        "seeds": [int(s) for s in clf._seeds],
    }
    fitted = {}
    for name in _FITTED:
        fitted[name] = _encode(getattr(clf, name), f"{name}{where}")
    if hasattr(clf, "feature_names_in_"):
        fitted["feature_names_in_"] = _encode(
            clf.feature_names_in_, f"feature_names_in_{where}"
        )
    classes = np.asarray(clf.classes_)
    if classes.dtype.kind not in "biufUO":
        raise ValueError(f"classes_{where} of dtype {classes.dtype} cannot be stored.")
    fitted["classes_"] = _encode(classes, f"classes_{where}")
    state["fitted"] = fitted
    state["history"] = [
        _encode(dict(row), f"history row {i}{where}")
        for i, row in enumerate(net.history)
    ]
    state["record_validation"] = _encode(
        list(clf._epochs.validation), f"validation record{where}"
    )
    criterion = net.criterion_
    state["criterion"] = {
        key: _encode(getattr(criterion, key), f"criterion.{key}{where}")
        for key in _CRITERION
    }
    # The callbacks' counters (the clock's best loss, the scorers' best scores, the
    # tracker's seed, ...): every attribute that is plain data; the rest (file
    # handles, functions, copies of the weights) is rebuilt or reset by the callback.
    state["callbacks"] = {
        name: {k: _encode(v, name) for k, v in vars(cb).items() if _plain(v)}
        for name, cb in net.callbacks_
    }
    for name, module in (("module", net.module_), ("criterion", criterion)):
        for key, tensor in module.state_dict().items():
            tensors[f"{prefix}{name}.{key}"] = (
                tensor.detach().to("cpu", copy=True).contiguous()
            )
    optimizer = net.optimizer_.state_dict()
    state["optimizer"] = {
        "param_groups": _encode(optimizer["param_groups"], f"optimizer{where}"),
        "state": {
            str(pid): _encode(
                values,
                f"optimizer state{where}",
                tensors=tensors,
                prefix=f"{prefix}optimizer.{pid}",
            )
            for pid, values in optimizer["state"].items()
        },
    }
    tensors[f"{prefix}generator"] = net.generator.get_state()
    return state


def _rebuild_classifier(state, tensors, prefix, device):
    params = _decode(state["params"], "params")
    built = _decode(state["built_params"], "built_params")
    if state["params"].get("random_state") == state["built_params"].get("random_state"):
        # One RandomState object, as in the saved estimator (not two equal copies).
        built["random_state"] = params["random_state"]
    fitted = {k: _decode(v, k) for k, v in state["fitted"].items()}
    classes_ = fitted.pop("classes_")
    n_features = fitted["n_features_in_"]
    if not (
        isinstance(classes_, np.ndarray) and classes_.ndim == 1 and len(classes_) >= 2
    ):
        raise ValueError("classes_ must be a 1-d array of at least 2 labels.")
    if not isinstance(n_features, Integral) or n_features < 1:
        raise ValueError("n_features_in_ must be a positive int.")
    names = fitted.get("feature_names_in_")
    if names is not None and (
        not isinstance(names, np.ndarray)
        or names.shape != (n_features,)
        or not all(isinstance(n, str) for n in names.tolist())
    ):
        raise ValueError("feature_names_in_ must hold n_features_in_ names.")
    _check_classes(classes_)

    # Build the network as fit does, from the hyperparameters it was built with. The
    # seeds that fit drew are restored below, so random_state (perhaps a RandomState,
    # which drawing would advance) is not consulted.
    clf = DynamicalLossClassifier(**dict(built, random_state=0))
    clf._validate_params()
    clf._check_hyperparameters()
    _check_network_size(clf, n_features, len(classes_), tensors, f"{prefix}module.")
    net = clf._build(n_features, classes_, device)

    _load_module(net.module_, tensors, f"{prefix}module.", "the network")
    _load_module(net.criterion_, tensors, f"{prefix}criterion.", "the loss")
    criterion = net.criterion_
    stored = _decode(state["criterion"], "criterion")
    if not isinstance(stored, dict) or set(stored) != set(_CRITERION):
        raise ValueError(f"The loss's state must hold {', '.join(_CRITERION)}.")
    for key, value in stored.items():
        if not _CRITERION_CHECKS[key](value):
            raise ValueError(
                f"criterion.{key} is {value!r}, not a value the loss can hold."
            )
        setattr(criterion, key, value)

    optimizer = state["optimizer"]
    groups = _decode(optimizer["param_groups"], "optimizer")
    # The optimizer's state may refer to its own tensors only, and torch does not
    # check their shapes or settings: both are checked against the built optimizer.
    own = f"{prefix}optimizer."
    own = {k: v for k, v in tensors.items() if k.startswith(own)}
    _check_param_groups(groups, net.optimizer_.state_dict()["param_groups"])
    parameters = [p for group in net.optimizer_.param_groups for p in group["params"]]
    if not isinstance(optimizer["state"], dict) or len(optimizer["state"]) > len(
        parameters
    ):
        raise ValueError("The optimizer's state names more parameters than it has.")
    opt_state = {}
    for pid, values in optimizer["state"].items():
        values = _decode(values, "optimizer state", tensors=own)
        if not (re.fullmatch(r"\d{1,9}", pid) and int(pid) < len(parameters)) or (
            not isinstance(values, dict)
        ):
            raise ValueError(f"The optimizer's state names no parameter {pid!r}.")
        index = int(pid)
        _check_optimizer_state(net.optimizer_, parameters, index, values)
        opt_state[index] = values
    try:
        net.optimizer_.load_state_dict({"state": opt_state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(
            f"The optimizer's state does not fit the network: {exc}"
        ) from exc

    generator = tensors.get(f"{prefix}generator")
    try:
        net.generator.set_state(generator)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(
            f"The shuffling generator's state is not valid: {exc}"
        ) from exc

    history = _decode(state["history"], "history")
    _check_history(history, len(classes_), fitted, built)
    net.history.clear()
    net.history.extend(history)

    stored = state["callbacks"]
    built_names = [name for name, _ in net.callbacks_]
    if sorted(stored) != sorted(built_names):
        raise ValueError(
            f"The file's callbacks {sorted(stored)} are not those the estimator builds "
            f"({sorted(built_names)})."
        )
    for name, cb in net.callbacks_:
        for key, value in _decode(stored[name], f"callback {name}").items():
            # Plain values only, under ordinary attribute names: counters, not code,
            # and never in place of a method or of a value of another kind.
            if (
                not key.isidentifier()
                or key.startswith("__")
                or callable(getattr(type(cb), key, None))
            ):
                raise ValueError(f"Callback {name}: {key!r} is not an attribute name.")
            current = vars(cb).get(key)
            if isinstance(current, str) and value != current:
                # A setting the estimator gives the callback (what it monitors, how),
                # not a counter: the file cannot change it.
                raise ValueError(
                    f"Callback {name}: {key} is {value!r}; the estimator sets it to "
                    f"{current!r}."
                )
            if (
                current is not None
                and value is not None
                and _kind(current) != _kind(value)
            ):
                raise ValueError(
                    f"Callback {name}: {key} is {value!r}, not a "
                    f"{type(current).__name__} like the value it replaces."
                )
            setattr(cb, key, value)

    record = _Record(len(classes_), built["loss"])
    record.sync(net.history)
    # The record keeps the validation scores of every epoch it saw (also of epochs the
    # divergence guard later cut from the history), so it is stored as it is.
    validation = _decode(state["record_validation"], "record")
    if not (
        isinstance(validation, list)
        and all(_kind(v) == "number" for v in validation)
        and (_validating(built) or not validation)
    ):
        raise ValueError(
            "The validation record must hold the validation scores with "
            "early_stopping on a validation split, and none without."
        )
    record.validation = [float(v) for v in validation]
    _check_fitted(fitted, record.validation, built)

    # The estimator: its current hyperparameters, what was built, the fitted state.
    clf.set_params(**params)
    clf._validate_params()
    clf._check_hyperparameters()
    clf._built_params = built
    seeds = state["seeds"]
    if not (
        isinstance(seeds, list)
        and len(seeds) == 4
        and all(type(s) is int and 0 <= s < 2**31 for s in seeds)
    ):
        raise ValueError("seeds must be 4 ints, as fit draws them.")
    clf._seeds = tuple(seeds)
    clf.classes_ = classes_
    for name, value in fitted.items():
        if name not in (*_FITTED, "feature_names_in_"):
            raise ValueError(f"{name!r} is not a fitted attribute the file may set.")
        setattr(clf, name, value)
    clf.net_ = net
    clf.module_ = net.module_
    clf.device_ = str(net.device)
    clf.period_ = criterion.period
    clf._epochs = record
    return clf


def _finite(value):
    return _kind(value) == "number" and math.isfinite(value)


def _kind(value):
    """What sort of plain value this is: numbers (int and float alike, not bools),
    and otherwise the type's name."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, Real):
        return "number"
    return type(value).__name__


def _check_classes(classes_):
    """classes_ as fit makes it: np.unique of the labels (sorted, distinct)."""
    try:
        unique = np.unique(classes_)
    except TypeError:
        unique = None
    if (
        unique is None
        or len(unique) != len(classes_)
        or not np.array_equal(unique, classes_)
    ):
        raise ValueError(
            "classes_ must be the sorted, distinct labels np.unique gives, as fit "
            "makes them."
        )
    if classes_.dtype.kind == "f" and not np.isfinite(classes_).all():
        raise ValueError("classes_ must not hold NaN or infinity.")


def _check_network_size(clf, n_features, n_classes, tensors, prefix):
    """The network the hyperparameters build has its parameters in the file: a file
    cannot make load build (and allocate) a network larger than itself."""
    from ._classifier import _hidden_sizes
    from ._modules import CNN, MLP

    hidden = _hidden_sizes(clf.hidden_layer_sizes)
    if clf.module == "mlp":
        expected = MLP.n_parameters(n_features, n_classes, hidden)
    else:
        shape = clf.image_shape
        side = math.isqrt(n_features)
        if shape is None and side * side == n_features:
            shape = (1, side, side)
        if shape is None:
            return  # _build refuses it before allocating anything
        expected = CNN.n_parameters(shape, n_classes, hidden)
    stored = sum(t.numel() for k, t in tensors.items() if k.startswith(prefix))
    if expected > stored:
        raise ValueError(
            f"The hyperparameters build a network of {expected:,} parameters, but the "
            f"file holds {stored:,} values for it."
        )


#: The optimizer's choice of kernel, made for the device it is built on (fused on the
#: CPU and CUDA, multi-tensor elsewhere): the loading machine's choice, not the file's.
_KERNEL_SETTINGS = ("fused", "foreach", "capturable")


def _same_kind(a, b):
    """Whether a stored optimizer setting ``a`` may stand for the built ``b``: numbers
    (the learning rate, betas, ...) may differ but must be finite numbers; flags and
    names are set when the optimizer is built and must be those it builds."""
    if isinstance(b, tuple | list):
        return (
            isinstance(a, tuple | list)
            and len(a) == len(b)
            and all(_same_kind(x, y) for x, y in zip(a, b, strict=True))
        )
    if _kind(b) == "number":
        return _kind(a) == "number" and math.isfinite(a)
    return _kind(a) == _kind(b) and a == b


def _check_param_groups(groups, built):
    """The stored settings of the optimizer, against those of the built one; settings
    that a newer torch added take the built optimizer's value."""
    if not isinstance(groups, list) or len(groups) != len(built):
        raise ValueError("The optimizer's parameter groups are not those it builds.")
    for group, expected in zip(groups, built, strict=True):
        if not isinstance(group, dict) or not set(group) <= set(expected):
            raise ValueError(
                "The optimizer's settings "
                f"{sorted(group) if isinstance(group, dict) else group!r} are not "
                f"those of the optimizer it builds ({sorted(expected)})."
            )
        for key, value in expected.items():
            if key not in group or key in _KERNEL_SETTINGS:
                group[key] = value
            elif key == "params" and group[key] != value:
                raise ValueError(
                    "The optimizer's parameter groups are not those it builds."
                )
            elif key != "params" and not _same_kind(group[key], value):
                raise ValueError(
                    f"The optimizer's setting {key}={group[key]!r} is not one the "
                    f"optimizer it builds can take (it has {value!r})."
                )


def _check_optimizer_state(optimizer, parameters, index, values):
    """The state of one parameter: each tensor a scalar or of the parameter's shape and
    dtype (L-BFGS keeps flat vectors of all the parameters, and lists of them, under
    the first parameter), nothing larger than what the optimizer itself keeps."""
    parameter = parameters[index]
    shapes = {(), tuple(parameter.shape)}
    limit = 1
    if isinstance(optimizer, torch.optim.LBFGS):
        shapes.add((sum(p.numel() for p in parameters),))
        limit = int(optimizer.param_groups[0]["history_size"])
    if isinstance(optimizer, torch.optim.Adafactor) and parameter.ndim >= 2:
        shape = tuple(parameter.shape)
        shapes |= {(*shape[:-1], 1), (*shape[:-2], 1, shape[-1])}

    def check(key, value, depth):
        if isinstance(value, torch.Tensor):
            if tuple(value.shape) not in shapes or (
                value.ndim and value.dtype != parameter.dtype
            ):
                raise ValueError(
                    f"The optimizer's {key} of parameter {index} has shape "
                    f"{tuple(value.shape)} ({value.dtype}), not the parameter's "
                    f"{tuple(parameter.shape)} ({parameter.dtype})."
                )
        elif isinstance(value, list | tuple) and depth == 0 and len(value) <= limit:
            for item in value:
                check(key, item, 1)
        elif not (value is None or isinstance(value, bool | int | float)):
            raise ValueError(
                f"The optimizer's {key} of parameter {index} is not a tensor, a number "
                "or a list of them as the optimizer keeps."
            )

    for key, value in values.items():
        check(key, value, 0)


def _check_history(history, n_classes, fitted, built):
    """The skorch history as fit writes it: one row per epoch, numbered 1, 2, ...,
    with the clock's record, n_iter_ rows in all."""
    if not isinstance(history, list):
        raise ValueError("The history must be a list of rows.")
    n_iter = fitted.get("n_iter_")
    if type(n_iter) is not int or n_iter != len(history):
        raise ValueError(
            f"n_iter_ is {n_iter!r}, but the history holds {len(history)} epochs; fit "
            "makes them equal."
        )
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise ValueError(f"History row {i} is not a dict.")
        problem = None
        if row.get("epoch") != i + 1 or type(row.get("epoch")) is not int:
            problem = f"is numbered {row.get('epoch')!r}, not {i + 1}"
        else:
            for key in ("loss_time", "train_loss", "train_base_loss", "train_accuracy"):
                if _kind(row.get(key)) != "number":
                    problem = f"has {key}={row.get(key)!r}, not a number"
                    break
            weights = row.get("class_weights")
            if problem is None and not (
                isinstance(weights, list)
                and len(weights) == n_classes
                and all(_kind(w) == "number" for w in weights)
            ):
                problem = f"does not hold the {n_classes} class weights of the epoch"
            if problem is None and "sharpness_dynamical" in row:
                if not all(
                    _kind(row.get(k)) == "number"
                    for k in (
                        "sharpness_dynamical",
                        "sharpness_base",
                        "stability_threshold",
                    )
                ):
                    problem = "has a sharpness record that is not three numbers"
        if problem:
            raise ValueError(f"History row {i} {problem}.")


def _check_fitted(fitted, validation, built):
    """The fitted attributes, of the types and values fit gives them."""

    def fail(name, expected):
        raise ValueError(
            f"The file sets {name} to {fitted.get(name)!r}; fit makes it {expected}."
        )

    if _kind(fitted.get("sharpness_")) != "number":
        fail("sharpness_", "a float (NaN when not computed)")
    info = fitted.get("sharpness_info_")
    if not isinstance(info, dict) or not all(
        v is None or isinstance(v, bool | int | float | str) for v in info.values()
    ):
        fail("sharpness_info_", "a dict of numbers")
    if not isinstance(fitted.get("diverged_"), bool):
        fail("diverged_", "a bool")
    if not isinstance(fitted.get("device_"), str):
        fail("device_", "a str")
    scores = fitted.get("validation_scores_")
    best = fitted.get("best_validation_score_")
    if _validating(built):
        if scores != validation:
            fail("validation_scores_", "the validation score of each epoch")
        if best != (max(validation) if validation else None):
            fail("best_validation_score_", "the best of validation_scores_")
    elif scores is not None or best is not None:
        fail(
            "validation_scores_" if scores is not None else "best_validation_score_",
            "None without early_stopping on a validation split",
        )


def _validating(built):
    """Whether the estimator was built to hold out a validation split."""
    return bool(built["early_stopping"]) and built["validation_fraction"] is not None


def _load_module(module, tensors, prefix, what):
    expected = module.state_dict()
    given = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if given.keys() != expected.keys():
        raise ValueError(
            f"The file's tensors for {what} ({sorted(given)}) are not those of the "
            f"network its hyperparameters build ({sorted(expected)})."
        )
    for key, tensor in given.items():
        if tensor.shape != expected[key].shape or tensor.dtype != expected[key].dtype:
            raise ValueError(
                f"{what}: {key} is {tensor.dtype} {tuple(tensor.shape)} in the file, "
                f"but {expected[key].dtype} {tuple(expected[key].shape)} in the network "
                "its hyperparameters build."
            )
    module.load_state_dict(given)


# ------------------------------------------------------------------- pipelines


def _pipeline_state(pipe, tensors):
    params = {k: v for k, v in pipe.get_params(deep=False).items() if k != "steps"}
    state = {"params": _encode_params(params, " of the Pipeline"), "steps": []}
    last = len(pipe.steps) - 1
    for i, (name, step) in enumerate(pipe.steps):
        where = f" of step {name!r}"
        if i == last:
            entry = {"name": name, "class": "DynamicalLossClassifier"}
            entry["state"] = _classifier_state(step, tensors, f"steps.{i}.", where)
        elif step is None or step == "passthrough":
            entry = {"name": name, "class": step}
        elif (
            type(step).__name__ in TRANSFORMERS
            and type(step) is TRANSFORMERS[type(step).__name__]
        ):
            check_is_fitted(step)
            entry = {
                "name": name,
                "class": type(step).__name__,
                "params": _encode_params(step.get_params(deep=False), where),
                "fitted": {
                    k: _encode(v, f"{k}{where}")
                    for k, v in vars(step).items()
                    if _ATTRIBUTE.match(k)
                },
            }
        else:
            # Any other step skops stores, as a skops archive in a tensor of bytes.
            from ._skops import dump_step

            key = f"steps.{i}.skops"
            data = dump_step(step, name)
            tensors[key] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            entry = {"name": name, "class": "skops", "tensor": key}
        state["steps"].append(entry)
    return state


def _rebuild_pipeline(state, tensors, device):
    steps = []
    entries = state["steps"]
    for i, entry in enumerate(entries):
        name, kind = entry["name"], entry["class"]
        if i == len(entries) - 1:
            if kind != "DynamicalLossClassifier":
                raise ValueError(
                    "The last step of a stored Pipeline is the classifier."
                )
            step = _rebuild_classifier(entry["state"], tensors, f"steps.{i}.", device)
        elif kind is None or kind == "passthrough":
            step = kind
        elif kind in TRANSFORMERS:
            step = TRANSFORMERS[kind](**_decode(entry["params"], name))
            step._validate_params()
            for key, value in _decode(entry["fitted"], name).items():
                if not _ATTRIBUTE.match(key):
                    raise ValueError(f"{key!r} is not a fitted attribute.")
                setattr(step, key, value)
        elif kind == "skops":
            from ._skops import read_step

            key = f"steps.{i}.skops"
            if entry.get("tensor") != key or key not in tensors:
                raise ValueError(f"Step {name!r}: its skops archive is not {key!r}.")
            step = read_step(_tensor_bytes(tensors[key]), name)
        else:
            raise ValueError(f"Step {name!r}: {kind!r} is not a step save writes.")
        steps.append((name, step))
    return Pipeline(steps, **_decode(state["params"], "Pipeline"))


# ------------------------------------------------------------------ the file


def _tensor_bytes(tensor):
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def checksum(meta, tensors):
    """SHA-256 over the file's contents: the JSON text, then each tensor's name, dtype,
    shape and bytes, in the order of their names, each field prefixed by its length."""
    h = hashlib.sha256()

    def field(data):
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    field(FORMAT.encode())
    field(meta.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name]
        field(name.encode("utf-8"))
        field(str(tensor.dtype).encode())
        field(json.dumps(list(tensor.shape)).encode())
        field(_tensor_bytes(tensor))
    return h.hexdigest()


def _versions():
    from . import __version__

    return {
        "skdynloss": __version__,
        "torch": torch.__version__,
        "skorch": skorch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save(estimator, path):
    """Save a fitted estimator to one file that :func:`load` reads back safely.

    The file holds data only: tensors and a JSON text, with a checksum over both.
    Loading it runs no code from the file, unlike a pickle or joblib file, so it is
    the way to share a model with people who need not trust its source.

    Parameters
    ----------
    estimator : DynamicalLossClassifier or Pipeline
        A fitted classifier, or a fitted Pipeline that ends in one. Its
        ``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler`` and
        ``"passthrough"`` steps are stored as data; other steps are stored by skops
        (the ``skops`` extra), when :func:`load` can read them back within its bounds.
    path : str, os.PathLike or binary file object
        Where to write. A path is written to a temporary file first and then renamed,
        so a failed save never leaves half a file.

    Raises
    ------
    ValueError
        When a hyperparameter is code rather than data (a callable ``module``,
        ``shape`` or ``loss``, user ``callbacks``, an optimizer class that is not in
        :mod:`torch.optim`); the message names it.
        Also when the contents would not pass :func:`load`'s checks: save rebuilds
        the estimator from them as load does before it writes anything.
    sklearn.exceptions.NotFittedError
        When the estimator is not fitted.
    TypeError
        When ``path`` is a file opened in text mode, or a Pipeline step is of a type
        that skops does not trust by default or builds from sizes a file declares
        (the message names the step).
    ImportError
        When a Pipeline step needs skops and skops is not installed.
    OSError
        When the file cannot be written (a missing folder, a full disk); a path's
        previous file is then left unchanged.

    See Also
    --------
    load : read the file back.

    Examples
    --------
    >>> import io
    >>> from sklearn.datasets import load_iris
    >>> from skdynloss import DynamicalLossClassifier, load, save
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = DynamicalLossClassifier(max_epochs=5, period=1, random_state=0).fit(X, y)
    >>> file = io.BytesIO()  # or a path: save(clf, "model.skdl")
    >>> save(clf, file)
    >>> _ = file.seek(0)
    >>> loaded = load(file)
    >>> bool((loaded.predict_proba(X) == clf.predict_proba(X)).all())
    True
    """
    tensors = {}
    if isinstance(estimator, Pipeline):
        content = {"pipeline": _pipeline_state(estimator, tensors)}
    else:
        content = {"classifier": _classifier_state(estimator, tensors, "")}
    version = 2 if any(k.endswith(".skops") for k in tensors) else 1
    meta = json.dumps(
        {
            "format": FORMAT,
            "format_version": version,
            "versions": _versions(),
            **content,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    # What load could not read back is refused here, before anything is written: the
    # contents go through load's own checks and rebuild.
    _verify(meta, tensors)
    payload = {
        "format": FORMAT,
        "format_version": version,
        "meta": meta,
        "tensors": tensors,
        "sha256": checksum(meta, tensors),
    }
    if not isinstance(path, str | os.PathLike):
        if isinstance(path, io.TextIOBase) or not hasattr(path, "write"):
            raise TypeError(
                "save writes to a path or a binary file object (open(path, 'wb'), "
                f"io.BytesIO()), not {'a file opened in text mode' if isinstance(path, io.TextIOBase) else type(path).__name__}."
            )
        _write(payload, path, "the file object")
        return
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".skdynloss-", suffix=".tmp")
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"Cannot save to {path}: its folder {directory} does not exist or is not "
            f"writable ({exc.strerror})",
        ) from exc
    try:
        try:
            with os.fdopen(fd, "wb") as file:
                _write(payload, file, path)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            # Closing after a failed write may fail again (flushing what is left):
            # the first failure is the one to report.
            first = exc if _reported(exc) else exc.__context__
            if _reported(first):
                raise first from first.__cause__
            raise _write_error(exc, path) from exc
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _verify(meta, tensors):
    """Refuse, with a ValueError, contents that load would refuse."""
    try:
        _check_tensor_extents(tensors, math.inf, "The model")
        parsed = json.loads(meta)
        _check_text(parsed, len(meta))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "pipeline" in parsed:
                _rebuild_pipeline(parsed["pipeline"], tensors, "cpu")
            else:
                _rebuild_classifier(parsed["classifier"], tensors, "", "cpu")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(
            "save cannot write this estimator in a form that load reads back, so it "
            f"writes nothing: {type(exc).__name__}: {exc}"
        ) from exc


class _Recorder:
    """A binary file's write, recording the OSError it raises: torch.save reports a
    failed write as its own RuntimeError, with the real error only as its context."""

    def __init__(self, file):
        self._file = file
        self.error = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self):
        with contextlib.suppress(AttributeError):
            self._file.flush()


def _reported(exc):
    return isinstance(exc, OSError) and getattr(exc, "_skdynloss_write", False)


def _write_error(exc, where):
    unchanged = (
        "the previous file, if any, is unchanged"
        if where != "the file object"
        else "what it holds now is incomplete"
    )
    error = OSError(
        exc.errno,
        f"Could not write the model to {where}: {exc.strerror or exc}; {unchanged}",
    )
    error._skdynloss_write = True
    return error


def _write(payload, file, where):
    recorder = _Recorder(file)
    try:
        torch.save(payload, recorder)
    except Exception as exc:
        error = recorder.error
        if error is None and isinstance(exc.__context__, OSError):
            error = exc.__context__
        if error is None:
            raise
        raise _write_error(error, where) from error


def _torch_is_safe():
    version = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return version is not None and tuple(map(int, version.groups())) >= SAFE_TORCH


def read(path):
    """The file's verified contents: (meta dict, tensors dict). Runs no code from it."""
    if not _torch_is_safe():
        raise RuntimeError(
            f"skdynloss.load needs torch >= {SAFE_TORCH[0]}.{SAFE_TORCH[1]} (this is "
            f"{torch.__version__}): earlier versions of torch.load(weights_only=True) "
            "could be made to run code from a file (CVE-2025-32434)."
        )
    name = path if isinstance(path, str | os.PathLike) else "The file"
    not_model = (
        f"{name} is not a skdynloss model file written by skdynloss.save, or it is "
        "damaged or truncated"
    )
    if isinstance(path, io.TextIOBase):
        raise TypeError(
            "load reads a path or a binary file object (open(path, 'rb')), not a file "
            "opened in text mode."
        )
    size = _check_archive(path, not_model)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:
        raise ValueError(f"{not_model}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{not_model}.")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{not_model}: no valid format version.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{name} was written in format {version} by a newer skdynloss; this "
            f"version reads formats up to {FORMAT_VERSION}. Upgrade skdynloss."
        )
    meta, tensors, digest = (payload.get(k) for k in ("meta", "tensors", "sha256"))
    if (
        set(payload) != _KEYS
        or not isinstance(meta, str)
        or not isinstance(digest, str)
        or not isinstance(tensors, dict)
        or not all(
            isinstance(k, str)
            and type(t) is torch.Tensor
            and t.layout == torch.strided
            and t.dtype in _DTYPES
            for k, t in tensors.items()
        )
    ):
        raise ValueError(
            f"{not_model}: its contents are not laid out as save writes them."
        )
    _check_tensor_extents(tensors, size, not_model)
    if checksum(meta, tensors) != digest:
        raise ValueError(
            f"{name} is damaged or was edited: its contents do not match their SHA-256 "
            "checksum."
        )
    return parse_text(meta, not_model), tensors


def parse_text(text, not_model):
    """The JSON text of a model, parsed and checked (:func:`_check_text`) before
    anything is built from it; ``not_model`` begins the message of the ValueError."""
    length = len(text)
    try:
        meta = json.loads(text)
    except RecursionError:
        raise ValueError(
            f"{not_model}: its JSON text is nested too deeply to read, which save "
            "never writes."
        ) from None
    except ValueError as exc:
        raise ValueError(f"{not_model}: its JSON text is not valid: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{not_model}.")
    try:
        _check_text(meta, length)
    except ValueError as exc:
        raise ValueError(f"{not_model}: {exc}") from None
    return meta


def _file_size(path):
    """The size in bytes of a path, or of a seekable binary file object from its
    current position (where torch.load starts reading)."""
    if isinstance(path, str | os.PathLike):
        return os.stat(path).st_size
    if not (hasattr(path, "read") and hasattr(path, "seek") and hasattr(path, "tell")):
        raise TypeError(
            f"load reads a path or a binary file object, got {type(path).__name__}."
        )
    start = path.tell()
    end = path.seek(0, os.SEEK_END)
    path.seek(start)
    return end - start


def stored_within(info, size, total):
    """Whether the zip record ``info`` is stored uncompressed (a compressed record
    could expand to any size) and lies, like all records up to it (``total`` bytes),
    inside an archive of ``size`` bytes."""
    return (
        info.compress_type == zipfile.ZIP_STORED
        and info.compress_size == info.file_size
        and info.header_offset + info.compress_size <= size
        and total <= size
    )


def _check_archive(path, not_model):
    """The file's zip archive, checked before torch reads it: torch.save's records only,
    stored uncompressed (a compressed record could expand to any size), within the
    file. Every storage torch then allocates is one of these records, so loading
    allocates at most the file's size for the tensors. Returns that size."""
    size = _file_size(path)
    file = path if not isinstance(path, str | os.PathLike) else open(path, "rb")
    start = file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{not_model}: not a zip archive ({exc}).") from None
    finally:
        if file is path:
            path.seek(start)
        else:
            file.close()
    prefixes = {info.filename.split("/", 1)[0] for info in infos}
    total = 0
    for info in infos:
        record = info.filename.split("/", 1)[-1]
        total += info.compress_size
        if (
            len(prefixes) != 1
            or not (
                record in _RECORDS
                or re.fullmatch(r"data/\d{1,9}|\.\w[\w.-]*(/\w[\w.-]*)?", record)
            )
            or not stored_within(info, size, total)
        ):
            raise ValueError(
                f"{not_model}: its record {info.filename[:80]!r} "
                f"({info.file_size} bytes, compression {info.compress_type}) is not one "
                f"that torch.save writes in a file of {size} bytes."
            )
    return size


def _check_tensor_extents(tensors, size, not_model):
    """Each tensor covers exactly its own storage, as save writes them: no view that
    reaches past its storage, repeats it (a stride of 0) or shares it, so that reading
    a tensor's bytes (for the checksum) copies at most the file's size."""
    seen = set()
    total = 0
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage()
        nbytes = tensor.numel() * tensor.element_size()
        if (
            not tensor.is_contiguous()
            or tensor.storage_offset() != 0
            or storage.nbytes() != nbytes
            or (nbytes and storage.data_ptr() in seen)
        ):
            raise ValueError(
                f"{not_model}: the tensor {key[:80]!r} of shape {tuple(tensor.shape)} "
                f"is a view ({storage.nbytes()} bytes stored), not the plain tensor "
                "save writes."
            )
        seen.add(storage.data_ptr())
        total += nbytes
        if total > size:
            raise ValueError(
                f"{not_model}: its tensors hold more bytes than the file's {size}."
            )


def load(path, *, device="auto"):
    """Load an estimator saved by :func:`save`, without running code from the file.

    The tensors are read by ``torch.load(weights_only=True)``, which builds tensors
    and plain containers only; everything else is JSON. Every size the file declares
    is checked against the file's own size before anything is allocated, so memory
    stays bounded for any file. The checksum is verified before anything is built,
    and the estimator is then rebuilt by its own code path,
    so it predicts identically and continues training (``warm_start``,
    ``partial_fit``) exactly as the saved one would have.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        The file.
    device : str or torch.device, default="auto"
        Where to put the network: ``"auto"`` is CUDA when available, else the CPU, so
        a model trained on a GPU loads on a machine without one. It becomes
        ``device_``; the ``device`` hyperparameter stays as saved (a new fit resolves
        it again).

    Returns
    -------
    estimator : DynamicalLossClassifier or Pipeline
        The fitted estimator, as it was saved.

    Raises
    ------
    ValueError
        When the file is not a skdynloss model, is damaged, truncated or edited (its
        checksum does not match), holds a pickle payload instead of data (it is
        refused, never executed), declares sizes that its own size cannot hold, or
        sets a fitted attribute to a value that fit would not give it. The message
        says what is wrong.
    TypeError
        When ``path`` is a file opened in text mode.
    ImportError
        When the file holds a Pipeline step stored by skops and skops is not
        installed.

    See Also
    --------
    save : write the file.
    """
    meta, tensors = read(path)
    device = _resolve_device(device)
    try:
        if "pipeline" in meta:
            return _rebuild_pipeline(meta["pipeline"], tensors, device)
        return _rebuild_classifier(meta["classifier"], tensors, "", device)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"The contents of {path if isinstance(path, str | os.PathLike) else 'the file'}"
            f" are not those of a skdynloss model: {type(exc).__name__}: {exc}"
        ) from exc
