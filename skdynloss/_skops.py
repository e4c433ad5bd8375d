"""The estimator as plain data for skops, and skops-stored steps in :func:`save` files.

skops (``skops.io``) persists objects without pickle: it stores an object's
``__getstate__`` with its own handlers for dicts, lists, strings, numbers and numpy
arrays, and rebuilds it by ``cls.__new__(cls)`` and ``__setstate__``, after checking
that every type the file names is trusted. A fitted estimator's own attributes hold
torch objects (the skorch net, its module, optimizer and generator), which skops has no
handler for, so :class:`DynamicalLossClassifier` gives skops the same contents that
:func:`save` writes: one JSON text (hyperparameters, classes, history, clock, counters)
and the tensors as numpy arrays. ``__setstate__`` rebuilds the estimator from them by
the builder ``fit`` uses, after the checks :func:`load` applies, so a skops file names
one type of this package and nothing from torch or skorch.

Pickle, :mod:`copy` and joblib keep the whole object as before (``__reduce_ex__``).

:func:`save` stores Pipeline steps that are not one of its four scalers as skops
archives. :func:`load` reads them back with bounds skops does not check itself (every
record stored uncompressed, every array's declared size within its record, each record
read once, a schema whose references cannot expand it), loaders that allocate nothing
the file declares, and skops' default trusted types (and numpy dtypes) only.
"""

import io
import json
import math
import re
import warnings
import zipfile

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._classifier import DynamicalLossClassifier, _resolve_device
from ._persistence import (
    FORMAT,
    FORMAT_VERSION,
    _classifier_state,
    _decode,
    _encode_params,
    _rebuild_classifier,
    _versions,
    parse_text,
    stored_within,
)

#: Where a missing skops is asked for.
EXTRA = "pip install 'skdynloss[skops]'"

#: Tensors as numpy arrays: numpy has every dtype load accepts but bfloat16, which is
#: stored as its bits.
_NUMPY = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "uint8": np.uint8,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
    "bfloat16": np.int16,
}
_STATE_KEYS = {"format", "meta", "tensors"}


def require_skops(what):
    """``skops.io``, or an ImportError that names the extra to install."""
    try:
        import skops.io
    except ImportError as exc:
        raise ImportError(
            f"{what} needs skops, an optional dependency of skdynloss: {EXTRA}"
        ) from exc
    return skops.io


# ---------------------------------------------------------- the estimator's state


def _fitted(clf):
    try:
        check_is_fitted(clf)
    except NotFittedError:
        return False
    return True


def plain_state(clf):
    """The estimator as skops stores it: ``{"format", "meta", "tensors"}``, the JSON
    text :func:`save` writes and the tensors as numpy arrays, nothing else."""
    what = "skops.io.dump cannot store this DynamicalLossClassifier as data"
    if type(clf) is not DynamicalLossClassifier:
        raise TypeError(
            f"{what}: it is a {type(clf).__module__}.{type(clf).__qualname__}, a "
            "subclass whose code cannot be stored as data. Store it with pickle or "
            "joblib, which only trusted sources may load."
        )
    tensors = {}
    try:
        if _fitted(clf):
            content = {"classifier": _classifier_state(clf, tensors, "")}
        else:
            content = {"params": _encode_params(clf.get_params(deep=False), "")}
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{what}: {exc}") from exc
    meta = {
        "format": FORMAT,
        # The layout of a classifier's contents, which version 1 of the format has.
        "format_version": 1,
        "versions": _versions(),
        "tensors": {name: _dtype_name(t) for name, t in tensors.items()},
        **content,
    }
    state = {
        "format": FORMAT,
        "meta": json.dumps(meta, sort_keys=True, separators=(",", ":")),
        "tensors": {name: _to_numpy(t) for name, t in tensors.items()},
    }
    # What could not be read back is refused now, not when someone loads the file.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _from_state(state, "cpu")
    except ValueError as exc:
        raise ValueError(f"{what} in a form that loads back: {exc}") from exc
    return state


def set_state(instance, state, fallback):
    """``__setstate__``: the plain-data state skops stores, or a pickle's (the
    object's own attributes, handed to ``fallback``)."""
    if isinstance(state, dict) and state.get("format") == FORMAT:
        estimator = _from_state(state, None)
        instance.__dict__.clear()
        instance.__dict__.update(vars(estimator))
        return
    if (
        isinstance(state, dict)
        and ("classes_" in state or "net_" in state)
        and not _is_net(state.get("net_"))
    ):
        # Pickles of fitted estimators hold their skorch net; a file that sets the
        # fitted attributes to other values (a skops file can) is refused.
        raise ValueError(
            "This DynamicalLossClassifier state sets fitted attributes without the "
            "network they belong to: it is neither a pickle of a fitted estimator nor "
            "what skops.io.dump writes, so it is not loaded."
        )
    fallback(state)


def _is_net(value):
    from skorch import NeuralNet

    return isinstance(value, NeuralNet)


def _dtype_name(tensor):
    return str(tensor.dtype).removeprefix("torch.")


def _to_numpy(tensor):
    tensor = tensor.detach().to("cpu", copy=True).contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy()


def _from_state(state, device):
    """The estimator a plain-data state describes, checked as :func:`load` checks a
    file; a ValueError says what is wrong."""
    not_state = (
        "The DynamicalLossClassifier in this file is not one that skops.io.dump "
        "writes, so it is not loaded"
    )
    if not isinstance(state, dict) or set(state) != _STATE_KEYS:
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state)
        raise ValueError(f"{not_state}: its state holds {keys}.")
    if not isinstance(state["meta"], str):
        raise ValueError(f"{not_state}: its JSON text is not a string.")
    meta = parse_text(state["meta"], not_state)
    try:
        version = meta.get("format_version")
        if type(version) is not int or version < 1:
            raise ValueError("it has no valid format version")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"it was written in format {version} by a newer skdynloss; this "
                f"version reads formats up to {FORMAT_VERSION}. Upgrade skdynloss"
            )
        tensors = _tensors(state["tensors"], meta.get("tensors"))
        kind = set(meta) & {"classifier", "params"}
        if set(meta) - kind != {"format", "format_version", "versions", "tensors"} or (
            len(kind) != 1
        ):
            raise ValueError(f"its JSON text holds {sorted(meta)}")
        if "params" in meta:
            if tensors:
                raise ValueError("an unfitted estimator holds no tensors")
            return _unfitted(meta["params"])
        stored = meta["classifier"]
        return _rebuild_classifier(stored, tensors, "", device or _device(stored))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{not_state}: {exc}") from exc


def _tensors(arrays, declared):
    """The numpy arrays skops loaded, as the tensors their JSON text declares."""
    if not isinstance(arrays, dict) or not isinstance(declared, dict):
        raise ValueError("its tensors are not a dict of arrays")
    if set(arrays) != set(declared):
        raise ValueError(
            f"its arrays {sorted(map(str, arrays))[:8]} are not the tensors its JSON "
            f"text declares ({sorted(declared)[:8]})"
        )
    tensors = {}
    for name, array in arrays.items():
        dtype = declared[name]
        if dtype not in _NUMPY:
            raise ValueError(f"the tensor {name!r} has dtype {dtype!r}")
        if type(array) is not np.ndarray or array.dtype != np.dtype(_NUMPY[dtype]):
            raise ValueError(
                f"the tensor {name!r} is a {type(array).__name__} of "
                f"{getattr(array, 'dtype', None)}, not an array of {dtype}"
            )
        tensor = torch.from_numpy(np.array(array, order="C", copy=True))
        tensors[name] = tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor
    return tensors


def _unfitted(stored):
    params = _decode(stored, "params")
    known = DynamicalLossClassifier().get_params(deep=False)
    if not isinstance(params, dict) or not set(params) <= set(known):
        raise ValueError(
            f"its hyperparameters {sorted(params) if isinstance(params, dict) else params!r} "
            "are not those of a DynamicalLossClassifier"
        )
    return DynamicalLossClassifier(**params)


def _device(stored):
    """Where the network goes: the device it was fitted on, when this machine has
    it, else the CPU (as skorch does when it unpickles a CUDA model without CUDA)."""
    saved = (
        stored.get("fitted", {}).get("device_") if isinstance(stored, dict) else None
    )
    if isinstance(saved, str):
        try:
            return _resolve_device(saved)
        except ValueError:
            warnings.warn(
                f"The model was fitted on {saved!r}, which this machine does not have; "
                "it is loaded on the CPU.",
                UserWarning,
                stacklevel=4,
            )
    return "cpu"


# ------------------------------------------------------------- steps in save files

#: skops loaders that allocate no more than the records and text of the file: their
#: values are the JSON text's, their arrays the records'. Excluded: TreeNode and
#: LossNode (their constructors allocate from counts the text declares), sparse
#: matrices (compressed records inside), Generators (a SeedSequence's pool size is
#: declared), bytearrays (a list of ints per byte), and the loaders skops never
#: trusts by default (methods, operators, constructor calls).
LOADERS = frozenset(
    {
        "DictNode",
        "DefaultDictNode",
        "ListNode",
        "SetNode",
        "TupleNode",
        "JsonNode",
        "NdArrayNode",
        "DTypeNode",
        "TypeNode",
        "FunctionNode",
        "PartialNode",
        "SliceNode",
        "ObjectNode",
        "RandomStateNode",
        "BytesNode",
    }
)
#: Types load trusts besides skops' defaults. skops leaves numpy dtypes untrusted
#: (SimpleImputer keeps one), but with the loaders above a dtype is only ever the
#: dtype of an empty array read from a checked record, or the class itself.
TRUSTED = ("numpy.dtype",)
#: The records of an archive skops writes: the schema, arrays and bytes.
_RECORD = re.compile(r"schema\.json|\d{1,24}\.npy|[0-9a-f-]{36}\.bin")
#: Nesting of a skops schema: a Pipeline of ColumnTransformers needs about 30 levels.
_MAX_DEPTH = 256


def dump_step(step, name):
    """A Pipeline step as the bytes of a skops archive that :func:`read_step` reads
    back; a TypeError naming the step when it cannot be one."""
    skops_io = require_skops(f"Saving the Pipeline step {name!r}")
    check_is_fitted(step)
    try:
        data = skops_io.dumps(step)
    except Exception as exc:
        raise TypeError(
            f"Step {name!r} is a {type(step).__qualname__}, which skops cannot store: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        check_archive(data)
    except ValueError as exc:
        raise TypeError(
            f"Step {name!r} cannot be stored in a file that load reads within its "
            f"bounds: {exc}. Share such a Pipeline with skops.io.dump."
        ) from exc
    untrusted = [t for t in skops_io.get_untrusted_types(data=data) if t not in TRUSTED]
    if untrusted:
        raise TypeError(
            f"Step {name!r} holds types that skops does not trust by default "
            f"({', '.join(untrusted)}), so load would refuse it. Share such a "
            "Pipeline with skops.io.dump, whose load takes a list of trusted types."
        )
    return data


def read_step(data, name):
    """The step a skops archive holds, read within the bounds of :func:`load`: a
    ValueError names the step and what is wrong."""
    skops_io = require_skops(f"Loading the Pipeline step {name!r}")
    try:
        check_archive(data)
        untrusted = [
            t for t in skops_io.get_untrusted_types(data=data) if t not in TRUSTED
        ]
        if untrusted:
            raise ValueError(
                f"it holds types that skops does not trust by default "
                f"({', '.join(untrusted)[:400]}), and load trusts no others"
            )
        with warnings.catch_warnings():
            # The versions of scikit-learn that wrote and read it may differ; the
            # file records them.
            warnings.simplefilter("ignore")
            step = skops_io.loads(data, trusted=list(TRUSTED))
        check_is_fitted(step)
        if not hasattr(step, "transform"):
            raise ValueError(f"it holds a {type(step).__name__}, not a transformer")
    except ValueError as exc:
        raise ValueError(f"Step {name!r}: {exc}.") from exc
    except Exception as exc:  # whatever skops or numpy raise on a damaged archive
        raise ValueError(
            f"Step {name!r} is not a valid skops archive: {type(exc).__name__}: {exc}"
        ) from exc
    return step


def check_archive(data):
    """The skops archive ``data`` (bytes), checked before skops reads it:

    * every record one that skops writes, stored uncompressed inside the archive;
    * every array's declared size within its record (numpy allocates what a header
      declares before it reads the data);
    * a schema of at most ``_MAX_DEPTH`` levels, of the loaders in ``LOADERS``, each
      record read by one node, and references (skops rebuilds a repeated ``__id__``
      as the node it saw first, and walks it again for every reference) that expand
      it at most twice plus 10,000 nodes.
    """
    size = len(data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"not a zip archive ({exc})") from None
    with archive:
        infos = archive.infolist()
        records = {}
        total = 0
        for info in infos:
            total += info.compress_size
            if (
                not _RECORD.fullmatch(info.filename)
                or info.filename in records
                or not stored_within(info, size, total)
            ):
                raise ValueError(
                    f"its record {info.filename[:80]!r} ({info.file_size} bytes, "
                    f"compression {info.compress_type}) is not one that skops writes "
                    f"in an archive of {size} bytes"
                )
            records[info.filename] = info.file_size
        if "schema.json" not in records:
            raise ValueError("it has no schema.json")
        for record in records:
            if record.endswith(".npy"):
                _check_npy(archive, record)
        text = archive.read("schema.json")
    try:
        schema = json.loads(text)
    except RecursionError:
        raise ValueError("its schema is nested too deeply to read") from None
    except ValueError as exc:
        raise ValueError(f"its schema is not valid JSON: {exc}") from None
    _check_schema(schema, records)


def _check_npy(archive, record):
    with archive.open(record) as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(file)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f"format version {version}")
        except (ValueError, SyntaxError, TypeError, EOFError) as exc:
            raise ValueError(
                f"its record {record!r} is not a numpy array ({exc})"
            ) from None
        left = archive.getinfo(record).file_size - file.tell()
    if (
        dtype.hasobject
        or any(n < 0 for n in shape)
        or math.prod(shape) * dtype.itemsize > left
    ):
        raise ValueError(
            f"its record {record!r} declares an array of shape {shape} and dtype "
            f"{dtype} that its {left} bytes of data cannot hold"
        )


def _check_schema(schema, records):
    """The walk of :func:`check_archive` over the schema: loaders, records, depth and
    how far references expand it."""
    # skops builds a node for each ``__id__`` once and returns it again wherever the
    # ``__id__`` recurs; its audit then walks the node again for every occurrence, so
    # a few repeated ``__id__``s in a short text can make it walk for years. What it
    # walks is bounded here: every container of the text belongs to the node (a dict
    # with an ``__id__``) nearest above it, a node inside another is a reference from
    # it, and an ``__id__`` stands for the largest of the nodes that carry it,
    # whichever of them skops meets first. skops writes each object once per place
    # it occurs and no object inside itself, so references never form a cycle.
    if not isinstance(schema, dict) or type(schema.get("__id__")) is not int:
        raise ValueError("its schema is not one that skops writes")
    nodes = []  # (own containers, referenced ids) of each node
    by_id = {}
    readers = {}
    containers = 0
    stack = [(schema, 1, None)]
    while stack:
        value, depth, owner = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"its schema is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            if "__id__" in value:
                key = value["__id__"]
                if type(key) is not int:
                    raise ValueError(f"its schema has an __id__ {str(key)[:40]!r}")
                if owner is not None:
                    nodes[owner][1].append(key)
                owner = len(nodes)
                nodes.append([0, []])
                by_id.setdefault(key, []).append(owner)
            _check_node(value, records, readers)
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        containers += 1
        nodes[owner][0] += 1
        stack.extend((v, depth + 1, owner) for v in children)

    limit = 2 * containers + 10_000
    if _walked(schema["__id__"], nodes, by_id, limit) > limit:
        raise ValueError(
            "its schema's references make it larger than its own text (skops would "
            f"walk more than {limit:,} nodes)"
        )


def _check_node(value, records, readers):
    """One dict of the schema: a loader of ``LOADERS``, and a record read once."""
    if "__loader__" not in value:
        return
    loader = value["__loader__"]
    if loader not in LOADERS:
        raise ValueError(
            f"its schema uses skops' {str(loader)[:40]!r}, which load does not read: "
            "it builds objects of sizes the file declares, or is not trusted by default"
        )
    if "file" in value:
        record, key = value["file"], value.get("__id__")
        if not isinstance(record, str) or record not in records or not key:
            raise ValueError(
                f"its schema reads a record {str(record)[:40]!r} it does not hold"
            )
        # skops reads a node's record when it builds the node, once per __id__.
        if readers.setdefault(record, key) != key:
            raise ValueError(f"its schema reads the record {record!r} more than once")


def _walked(root, nodes, by_id, limit):
    """How many containers skops walks from the node ``root`` (an ``__id__``), at
    most ``limit + 1``: a depth-first walk over the references, each ``__id__``
    counted once; a ValueError for a cycle."""
    size = {}
    grey = set()

    def children(key):
        return (ref for node in by_id[key] for ref in nodes[node][1])

    stack = [(root, children(root))]
    grey.add(root)
    while stack:
        key, pending = stack[-1]
        for ref in pending:
            if ref in grey:
                raise ValueError("its schema's references form a cycle")
            if ref not in size:
                grey.add(ref)
                stack.append((ref, children(ref)))
                break
        else:
            stack.pop()
            grey.discard(key)
            size[key] = min(
                limit + 1,
                max(
                    nodes[node][0] + sum(size[ref] for ref in nodes[node][1])
                    for node in by_id[key]
                ),
            )
    return size[root]
