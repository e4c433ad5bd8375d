"""skops: Pipelines holding the estimator through skops.io, and skops-stored steps in
skdynloss.save files, read within load's bounds."""

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectFromModel
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from skorch import NeuralNet
from skorch.callbacks import Callback

import skdynloss
from skdynloss import (
    DynamicalLossClassifier,
    LockstepGridSearchCV,
    _persistence,
    fit_lockstep,
    load,
    save,
)

sio = pytest.importorskip("skops.io")

OURS = ["skdynloss._classifier.DynamicalLossClassifier"]
FAST = {
    "hidden_layer_sizes": (8,),
    "max_epochs": 3,
    "period": 1.5,
    "lr": 1e-2,
    "compute_sharpness": False,
    "random_state": 7,
}


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
    return 3.0 * X + 1.0, y


def skops_round_trip(estimator):
    data = sio.dumps(estimator)
    assert sio.get_untrusted_types(data=data) == OURS
    return sio.loads(data, trusted=OURS)


def assert_same_fit(a, b, X):
    """Bit-identical predictions and per-epoch records, history row by row."""
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    for key, value in a.dynamics_.items():
        np.testing.assert_array_equal(value, b.dynamics_[key])
    assert len(a.net_.history) == len(b.net_.history)
    for row_a, row_b in zip(a.net_.history, b.net_.history, strict=True):
        np.testing.assert_equal(row_a, row_b)
    for pa, pb in zip(a.module_.parameters(), b.module_.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert torch.equal(a.net_.generator.get_state(), b.net_.generator.get_state())


def column_transformer():
    return ColumnTransformer(
        [("scaled", StandardScaler(), [0, 1])], remainder="passthrough"
    )


STEPS = {
    "scaler": StandardScaler,
    "column_transformer": column_transformer,
    "pca": lambda: PCA(3, random_state=0),
}


# ------------------------------------------------------------ skops.io round trips


@pytest.mark.parametrize("make_step", STEPS.values(), ids=STEPS)
def test_a_pipeline_round_trips_through_skops_and_continues_exactly(make_step, blobs):
    X, y = blobs
    pipe = make_pipeline(
        make_step(), DynamicalLossClassifier(**FAST, batch_size=16, warm_start=True)
    ).fit(X, y)
    loaded = skops_round_trip(pipe)
    assert [name for name, _ in loaded.steps] == [name for name, _ in pipe.steps]
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    # warm_start continues the clock, momentum, shuffling and record where they stood.
    for p in (pipe, loaded):
        p.set_params(dynamicallossclassifier__max_epochs=2).fit(X, y)
    assert pipe[-1].n_iter_ == 5
    assert_same_fit(loaded[-1], pipe[-1], pipe[:-1].transform(X))


def test_partial_fit_after_a_skops_round_trip_continues_exactly(blobs):
    X, y = blobs
    original = DynamicalLossClassifier(**FAST, optimizer="adam", batch_size=16)
    original.partial_fit(X, y, classes=np.unique(y))
    loaded = skops_round_trip(original)
    for _ in range(2):
        original.partial_fit(X, y)
        loaded.partial_fit(X, y)
    assert original.n_iter_ == 3
    assert_same_fit(loaded, original, X)


def test_a_cnn_round_trips_through_skops(blobs):
    X, y = blobs
    cnn = {**FAST, "module": "cnn", "image_shape": (1, 2, 2), "warm_start": True}
    original = DynamicalLossClassifier(**cnn).fit(X, y)
    loaded = skops_round_trip(original)
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    for clf in (original, loaded):
        clf.set_params(max_epochs=2).fit(X, y)
    assert_same_fit(loaded, original, X)


def test_stack_fitted_models_round_trip_through_skops(blobs):
    X, y = blobs
    models = fit_lockstep(
        [DynamicalLossClassifier(**FAST, amplitude=a) for a in (1.0, 4.0, 9.0)], X, y
    )
    for model in models:
        loaded = skops_round_trip(model)
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
        for clf in (model, loaded):
            clf.set_params(warm_start=True, max_epochs=2).fit(X, y)
        assert_same_fit(loaded, model, X)


def test_a_search_s_best_estimator_round_trips_through_skops(blobs):
    X, y = blobs
    search = LockstepGridSearchCV(
        make_pipeline(StandardScaler(), DynamicalLossClassifier(**FAST)),
        {"dynamicallossclassifier__amplitude": [1.0, 4.0]},
        cv=2,
    ).fit(X, y)
    best = search.best_estimator_
    loaded = skops_round_trip(best)
    np.testing.assert_array_equal(loaded.predict_proba(X), best.predict_proba(X))
    assert loaded.score(X, y) == search.score(X, y)


def test_a_whole_search_round_trips_through_skops(blobs):
    X, y = blobs
    search = LockstepGridSearchCV(
        DynamicalLossClassifier(**FAST), {"amplitude": [1.0, 4.0]}, cv=2
    ).fit(X, y)
    data = sio.dumps(search)
    untrusted = sio.get_untrusted_types(data=data)
    ours = [t for t in untrusted if t.startswith("skdynloss.")]
    assert ours == [*OURS, "skdynloss._search.LockstepGridSearchCV"]
    # The rest are scikit-learn's helpers, which skops lists for its own searches too.
    assert all(t.startswith("sklearn.") for t in untrusted if t not in ours)
    loaded = sio.loads(data, trusted=untrusted)
    assert loaded.best_params_ == search.best_params_
    np.testing.assert_array_equal(loaded.predict_proba(X), search.predict_proba(X))


def test_unfitted_estimators_round_trip_through_skops(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(**{**FAST, "random_state": np.random.RandomState(3)})
    loaded = skops_round_trip(make_pipeline(StandardScaler(), clf))[-1]
    assert not hasattr(loaded, "net_")
    assert loaded.get_params()["lr"] == FAST["lr"]
    np.testing.assert_equal(
        loaded.random_state.get_state(), clf.random_state.get_state()
    )
    # The next fit draws the same seeds from the RandomState.
    np.testing.assert_array_equal(
        loaded.fit(X, y).predict_proba(X), clf.fit(X, y).predict_proba(X)
    )


def test_the_state_skops_reads_holds_no_torch_objects(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(**FAST, dtype="float64").fit(X, y)
    state = clf.__getstate__()
    assert set(state) == {"format", "meta", "tensors"}
    assert isinstance(state["meta"], str)
    assert all(type(a) is np.ndarray for a in state["tensors"].values())

    # skops never meets a torch or skorch object, so it never asks one for its state.
    def refuse(self, *args):
        raise AssertionError("skops reached a torch object")

    with pytest.MonkeyPatch.context() as patch:
        for cls in (torch.Tensor, torch.nn.Module, torch.optim.Optimizer, NeuralNet):
            for name in ("__reduce__", "__reduce_ex__", "__getstate__"):
                patch.setattr(cls, name, refuse)
        data = sio.dumps(make_pipeline(StandardScaler(), clf))
    modules = set()

    def walk(value):
        if isinstance(value, dict):
            if "__module__" in value:
                modules.add(value["__module__"].split(".")[0])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json")))
    assert modules == {"builtins", "numpy", "sklearn", "skdynloss"}
    loaded = sio.loads(data, trusted=OURS)[-1]
    assert {p.dtype for p in loaded.module_.parameters()} == {torch.float64}
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_pickles_keep_the_whole_object(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(**FAST).fit(X, y)
    reconstructor, args, state = clf.__reduce_ex__(pickle.HIGHEST_PROTOCOL)[:3]
    assert args == (DynamicalLossClassifier,) and state.keys() == vars(clf).keys()
    assert state["net_"] is clf.net_
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(clf, protocol=protocol))
        assert type(again.net_) is type(clf.net_)
        np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_what_is_code_is_refused_by_skops_dump_with_a_clear_error(blobs):
    clf = DynamicalLossClassifier(**FAST, callbacks=[Callback()]).fit(*blobs)
    with pytest.raises(ValueError, match="skops.io.dump cannot store .*callbacks"):
        sio.dumps(make_pipeline(StandardScaler(), clf))

    class Mine(DynamicalLossClassifier):
        pass

    with pytest.raises(TypeError, match="subclass"):
        sio.dumps(Mine())


# ----------------------------------------------------------- tampered skops files


def edit_schema(data, edit):
    """``data`` with ``edit(schema)`` applied to its schema.json."""
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "schema.json":
                content = json.dumps(schema).encode()
            target.writestr(name, content)
    return out.getvalue()


def classifier_node(schema):
    stack = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if value.get("__class__") == "DynamicalLossClassifier":
                return value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    raise LookupError


def edit_meta(edit):
    def apply(schema):
        meta_node = classifier_node(schema)["content"]["content"]["meta"]
        meta = json.loads(json.loads(meta_node["content"]))
        edit(meta)
        meta_node["content"] = json.dumps(json.dumps(meta))

    return apply


class Payload:
    """Building this runs ``os.mkdir(marker)``: the attack a hostile file means."""

    def __setstate__(self, state):
        os.mkdir(state["marker"])


@pytest.fixture(scope="module")
def dumped(blobs):
    pipe = make_pipeline(StandardScaler(), DynamicalLossClassifier(**FAST))
    return sio.dumps(pipe.fit(*blobs))


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            edit_meta(lambda m: m["classifier"]["fitted"].update(n_iter_=99)),
            "n_iter_ is 99, but the history holds 3 epochs",
        ),
        (
            edit_meta(lambda m: m["classifier"]["criterion"].update(amplitude=0.5)),
            "criterion.amplitude is 0.5, not a value the loss can hold",
        ),
        (
            edit_meta(lambda m: m["tensors"].update({"generator": "float64"})),
            "the tensor 'generator' is a ndarray of uint8, not an array of float64",
        ),
        (
            edit_meta(lambda m: m.update(format_version=7)),
            "written in format 7 by a newer skdynloss",
        ),
        (
            lambda s: classifier_node(s)["content"]["content"].pop("tensors"),
            "its state holds \\['format', 'meta'\\]",
        ),
    ],
)
def test_a_tampered_skops_file_is_a_clear_error(dumped, edit, match):
    data = edit_schema(dumped, edit)
    assert sio.get_untrusted_types(data=data) == OURS
    with pytest.raises(ValueError, match=f"not one that skops.io.dump writes.*{match}"):
        sio.loads(data, trusted=OURS)


def test_the_built_network_must_match_the_stored_tensors(dumped):
    data = edit_schema(
        dumped,
        edit_meta(
            lambda m: m["classifier"]["built_params"].update(
                hidden_layer_sizes={"__tuple__": [4096, 4096]}
            )
        ),
    )
    with pytest.raises(
        ValueError,
        match="build a network of 16,814,083 parameters, but the file holds 67",
    ):
        sio.loads(data, trusted=OURS)


def test_a_skops_file_cannot_set_fitted_attributes_without_a_network(dumped):
    def raw(schema):
        node = classifier_node(schema)
        node["content"]["content"] = {
            "classes_": node["content"]["content"]["format"],
            "net_": node["content"]["content"]["format"],
        }

    with pytest.raises(ValueError, match="without the network they belong to"):
        sio.loads(edit_schema(dumped, raw), trusted=OURS)


def test_code_named_by_a_skops_file_is_refused_not_run(dumped, tmp_path):
    marker = tmp_path / "ran"

    def inject(schema):
        node = classifier_node(schema)["content"]["content"]
        node["meta"] = {
            "__class__": "Payload",
            "__module__": __name__,
            "__loader__": "ObjectNode",
            "__id__": 1,
            "content": {
                "__class__": "dict",
                "__module__": "builtins",
                "__loader__": "DictNode",
                "__id__": 2,
                "content": {
                    "marker": {
                        **node["format"],
                        "__id__": 5,
                        "content": json.dumps(str(marker)),
                    }
                },
                "key_types": {
                    "__class__": "list",
                    "__module__": "builtins",
                    "__loader__": "ListNode",
                    "__id__": 3,
                    "content": [
                        {
                            "__class__": "str",
                            "__module__": "builtins",
                            "__loader__": "TypeNode",
                            "__id__": 4,
                        }
                    ],
                },
            },
        }

    data = edit_schema(dumped, inject)
    assert f"{__name__}.Payload" in sio.get_untrusted_types(data=data)
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(data, trusted=OURS)
    assert not marker.exists()
    # Trusting the payload does build it: the test is not vacuous.
    with pytest.raises(ValueError):
        sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    assert marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only run")
def test_a_model_fitted_on_cuda_loads_on_the_cpu_where_there_is_no_cuda(blobs):
    X, y = blobs
    clf = DynamicalLossClassifier(**FAST).fit(X, y)

    def fitted_on_cuda(meta):
        state = meta["classifier"]
        state["fitted"]["device_"] = "cuda:0"
        state["params"]["device"] = state["built_params"]["device"] = "cuda"

    data = edit_schema(sio.dumps(clf), edit_meta(fitted_on_cuda))
    with pytest.warns(UserWarning, match="fitted on 'cuda:0'.*loaded on the CPU"):
        loaded = sio.loads(data, trusted=OURS)
    assert loaded.device_ == "cpu" and loaded.device == "cuda"
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


@pytest.mark.gpu
def test_a_cuda_model_stays_on_cuda_through_skops(blobs):
    X, y = blobs
    gpu = DynamicalLossClassifier(**FAST, device="cuda", warm_start=True).fit(X, y)
    loaded = skops_round_trip(gpu)
    assert loaded.device_ == gpu.device_
    assert all(p.is_cuda for p in loaded.module_.parameters())
    np.testing.assert_array_equal(loaded.predict_proba(X), gpu.predict_proba(X))
    for clf in (gpu, loaded):
        clf.set_params(max_epochs=2).fit(X, y)
    assert_same_fit(loaded, gpu, X)


# --------------------------------------------------- skops steps in skdynloss.save


def save_and_load(estimator):
    file = io.BytesIO()
    save(estimator, file)
    file.seek(0)
    return load(file), file


@pytest.mark.parametrize("make_step", STEPS.values(), ids=STEPS)
def test_save_stores_any_step_skops_trusts(make_step, blobs):
    X, y = blobs
    pipe = make_pipeline(
        make_step(), StandardScaler(), DynamicalLossClassifier(**FAST, warm_start=True)
    ).fit(X, y)
    loaded, file = save_and_load(pipe)
    meta = json.loads(
        torch.load(io.BytesIO(file.getvalue()), weights_only=True)["meta"]
    )
    # Files with skops steps are format 2; a StandardScaler stays plain data.
    assert meta["format_version"] == (1 if make_step is StandardScaler else 2)
    np.testing.assert_array_equal(loaded[:-1].transform(X), pipe[:-1].transform(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    for p in (pipe, loaded):
        p.set_params(dynamicallossclassifier__max_epochs=2).fit(X, y)
    assert_same_fit(loaded[-1], pipe[-1], pipe[:-1].transform(X))


def test_save_trusts_numpy_dtypes_which_skops_does_not_by_default(blobs):
    from sklearn.impute import SimpleImputer

    X, y = blobs
    pipe = make_pipeline(SimpleImputer(), DynamicalLossClassifier(**FAST)).fit(X, y)
    assert sio.get_untrusted_types(data=sio.dumps(pipe)) == ["numpy.dtype", *OURS]
    loaded, _ = save_and_load(pipe)
    assert loaded[0]._fit_dtype == pipe[0]._fit_dtype
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


class Shift(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.mean_ = np.mean(X, axis=0)
        return self

    def transform(self, X):
        return X - self.mean_


def test_save_refuses_steps_load_could_not_read_within_its_bounds(blobs, tmp_path):
    untrusted = make_pipeline(Shift(), DynamicalLossClassifier(**FAST)).fit(*blobs)
    with pytest.raises(TypeError, match="Step 'shift' holds types .*test_skops.Shift"):
        save(untrusted, tmp_path / "a.skdl")
    # A tree's constructor allocates what the file declares (its node count).
    tree = SelectFromModel(DecisionTreeClassifier(random_state=0))
    treed = make_pipeline(tree, DynamicalLossClassifier(**FAST)).fit(*blobs)
    with pytest.raises(TypeError, match="'TreeNode', which load does not read"):
        save(treed, tmp_path / "b.skdl")
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def saved_pca(blobs):
    pipe = make_pipeline(PCA(3, random_state=0), DynamicalLossClassifier(**FAST))
    file = io.BytesIO()
    save(pipe.fit(*blobs), file)
    return file.getvalue()


def forge_step(saved, edit):
    """The saved file with its PCA step's archive replaced by ``edit(archive)`` and a
    valid checksum: the checksum says nothing about who wrote a file."""
    payload = torch.load(io.BytesIO(saved), weights_only=True)
    tensors = payload["tensors"]
    data = edit(tensors["steps.0.skops"].numpy().tobytes())
    tensors["steps.0.skops"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    payload["sha256"] = _persistence.checksum(payload["meta"], tensors)
    file = io.BytesIO()
    torch.save(payload, file)
    file.seek(0)
    return file


def rewrite(data, records=None, compression=zipfile.ZIP_STORED):
    """A skops archive with some records replaced."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as target:
        for name in source.namelist():
            target.writestr(name, (records or {}).get(name, source.read(name)))
    return out.getvalue()


def huge_npy(data):
    source = zipfile.ZipFile(io.BytesIO(data))
    name = next(n for n in source.namelist() if n.endswith(".npy"))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
    )
    return rewrite(data, {name: header.getvalue() + b"\0" * 64})


def expanding(data):
    """A schema of 60 levels of lists, each holding the level below twice (once by
    reference): skops' audit would walk it 2**60 times."""
    node = {"__class__": "int", "__module__": "builtins", "__loader__": "JsonNode",
            "content": "1", "is_json": True, "__id__": 1}  # fmt: skip
    for i in range(2, 62):
        node = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                "content": [node, {"__id__": i - 1}], "__id__": i}  # fmt: skip
    schema = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json"))
    schema["content"]["content"]["n_components_"] = node
    return rewrite(data, {"schema.json": json.dumps(schema).encode()})


def untrusted(marker):
    def edit(data):
        schema = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json"))
        schema["content"]["content"]["n_components_"] = {
            "__class__": "system", "__module__": "os", "__loader__": "FunctionNode",
            "__id__": 99, "content": {"module_path": "os", "function": "system"},
        }  # fmt: skip
        return rewrite(data, {"schema.json": json.dumps(schema).encode()})

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: rewrite(d, compression=zipfile.ZIP_DEFLATED), "compression 8"),
        (huge_npy, r"declares an array of shape \(1099511627776,\)"),
        (expanding, "references make it larger than its own text"),
        (untrusted(None), "types that skops does not trust by default \\(os.system\\)"),
        (lambda d: d[: len(d) // 2], "not a zip archive"),
        (lambda d: rewrite(d, {"schema.json": b"[" * 100_000}), "nested too deeply"),
    ],
    ids=["compressed", "huge-array", "expanding", "untrusted", "truncated", "deep"],
)
def test_load_reads_skops_steps_within_its_bounds(saved_pca, edit, match):
    # Refused before skops walks the schema or allocates what the archive declares
    # (unchecked, "expanding" keeps skops busy for years, "huge-array" allocates 8 TiB).
    with pytest.raises(ValueError, match=f"Step 'pca'.*{match}"):
        load(forge_step(saved_pca, edit))


# ------------------------------------------------------------- without skops


def test_without_skops_the_package_works_and_asks_for_the_extra(saved_pca, tmp_path):
    path = tmp_path / "pca.skdl"
    path.write_bytes(saved_pca)
    script = f"""
import sys
sys.modules["skops"] = None  # import skops raises ImportError
import io, pickle
import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
import skdynloss
X = np.random.RandomState(0).randn(30, 4); y = np.arange(30) % 3
clf = skdynloss.DynamicalLossClassifier(max_epochs=2, period=1).fit(X, y)
pickle.loads(pickle.dumps(clf))
skdynloss.save(make_pipeline(StandardScaler(), clf).fit(X, y), io.BytesIO())
for call in (
    lambda: skdynloss.save(make_pipeline(PCA(2), clf).fit(X, y), io.BytesIO()),
    lambda: skdynloss.load({str(path)!r}),
):
    try:
        call()
    except ImportError as exc:
        print("ImportError:", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout.splitlines()
    assert out == [
        "ImportError: Saving the Pipeline step 'pca' needs skops, an optional "
        "dependency of skdynloss: pip install 'skdynloss[skops]'",
        "ImportError: Loading the Pipeline step 'pca' needs skops, an optional "
        "dependency of skdynloss: pip install 'skdynloss[skops]'",
    ]
    assert skdynloss.__version__
