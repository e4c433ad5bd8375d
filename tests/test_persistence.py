"""skdynloss.save / skdynloss.load: data only, verified, and a model that carries on."""

import functools
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from skorch.callbacks import Callback

import skdynloss
from skdynloss import DynamicalLossClassifier, _persistence, load, save

FAST = {
    "hidden_layer_sizes": (8,),
    "max_epochs": 3,
    "period": 1.5,
    "lr": 1e-2,
    "compute_sharpness": False,
    "random_state": 7,  # not 0, the seed load builds with before restoring the seeds
}

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only run")


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def fitted(blobs):
    return DynamicalLossClassifier(**FAST, batch_size=16).fit(*blobs)


@pytest.fixture
def saved(fitted, tmp_path):
    path = tmp_path / "model.skdl"
    save(fitted, path)
    return path


def round_trip(estimator, tmp_path, **kwargs):
    path = tmp_path / "round-trip.skdl"
    save(estimator, path)
    return load(path, **kwargs)


def forge(path, edit, edit_tensors=None):
    """Rewrite a saved file with ``edit(meta dict)`` applied and a valid checksum: what
    someone who means to could do, so load must check the contents, not just the sum."""
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    edit(meta)
    if edit_tensors is not None:
        edit_tensors(payload["tensors"])
    payload["meta"] = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    payload["sha256"] = _persistence.checksum(payload["meta"], payload["tensors"])
    torch.save(payload, path)


def assert_same_fit(a, b, X):
    """Bit-identical predictions and per-epoch records, history row by row."""
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    for key, value in a.dynamics_.items():
        np.testing.assert_array_equal(value, b.dynamics_[key])
    for key, value in a.sharpness_history_.items():
        np.testing.assert_array_equal(value, b.sharpness_history_[key])
    assert len(a.net_.history) == len(b.net_.history)
    for row_a, row_b in zip(a.net_.history, b.net_.history, strict=True):
        assert row_a.keys() == row_b.keys()
        np.testing.assert_equal(row_a, row_b)
    np.testing.assert_equal(a.sharpness_, b.sharpness_)
    assert a.sharpness_info_ == b.sharpness_info_
    assert a.validation_scores_ == b.validation_scores_
    assert a.best_validation_score_ == b.best_validation_score_
    assert a.diverged_ == b.diverged_
    assert torch.equal(a.net_.generator.get_state(), b.net_.generator.get_state())


# ------------------------------------------------------------------ round trips


def test_loaded_model_predicts_identically(fitted, saved, blobs):
    X, y = blobs
    loaded = load(saved)
    assert type(loaded) is DynamicalLossClassifier
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert loaded.score(X, y) == fitted.score(X, y)
    assert loaded.get_params() == fitted.get_params()
    assert loaded._built_params == fitted._built_params
    assert loaded._seeds == fitted._seeds
    assert loaded.n_features_in_ == 4 and loaded.device_ == "cpu"
    assert_same_fit(loaded, fitted, X)
    # The network is a fresh one on its own storage, not shared with the original.
    assert all(
        p.data_ptr() != q.data_ptr()
        for p, q in zip(
            loaded.module_.parameters(), fitted.module_.parameters(), strict=True
        )
    )


def test_a_loaded_model_is_an_ordinary_estimator(saved, fitted, blobs):
    from sklearn.base import clone

    X, _ = blobs
    loaded = load(saved)
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert clone(loaded).get_params() == fitted.get_params()


@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, 7, 11]),
        np.array(["ant", "bee", "cat"]),
        np.array(["ant", "bee", "cat"], dtype=object),
        np.array([-1.0, 1.0, 2.0]),
        np.array([False, True, True]),
    ],
    ids=["int", "str", "object", "float", "bool"],
)
def test_classes_keep_their_values_and_dtype(labels, blobs, tmp_path):
    X, y = blobs
    if labels.dtype == bool:
        y, labels = y > 0, labels[:2]  # two classes
    else:
        y = labels[y]
    clf = DynamicalLossClassifier(**FAST).fit(X, y)
    loaded = round_trip(clf, tmp_path)
    assert loaded.classes_.dtype == clf.classes_.dtype
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    predicted = loaded.predict(X)
    assert predicted.dtype == clf.predict(X).dtype
    np.testing.assert_array_equal(predicted, clf.predict(X))


def test_feature_names_are_kept(blobs, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = blobs
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = DynamicalLossClassifier(**FAST).fit(frame, y)
    loaded = round_trip(clf, tmp_path)
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c", "d"])
    assert loaded.feature_names_in_.dtype == object
    with pytest.warns(UserWarning, match="feature names"):
        loaded.predict(X)
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))


def test_a_file_object_works_as_well_as_a_path(fitted, blobs):
    X, _ = blobs
    buffer = io.BytesIO()
    save(fitted, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(
        load(buffer).predict_proba(X), fitted.predict_proba(X)
    )


def test_the_file_records_the_versions_and_the_format(saved):
    meta, tensors = _persistence.read(saved)
    assert meta["format"] == "skdynloss-model" and meta["format_version"] == 1
    assert meta["versions"]["skdynloss"] == skdynloss.__version__
    assert meta["versions"]["torch"] == torch.__version__
    assert {"skorch", "scikit-learn", "numpy", "python"} <= set(meta["versions"])
    # Tensors for the network, the loss's weights, the optimizer and the generator.
    assert "module.0.weight" in tensors and "criterion.weights" in tensors
    assert tensors["generator"].dtype == torch.uint8


# ----------------------------------------------------------- carrying on training

CONTINUATIONS = {
    # Full-batch gradient descent with heavy-ball momentum, the paper's setting.
    "full_batch_sgd": {"batch_size": -1, "optimizer": "sgd", "momentum": 0.5},
    # Mini-batches shuffled by the estimator's generator, fused Adam.
    "mini_batch_adam": {"batch_size": 16, "optimizer": "adam"},
    # Random focus order, float64, the sharpness record, early stopping's validation.
    "random_order_sharpness_validation": {
        "batch_size": 16,
        "order": "random",
        "dtype": "float64",
        "compute_sharpness": True,
        "sharpness_every": 2,
        "early_stopping": True,
        "validation_fraction": 0.2,
    },
    "cnn": {"module": "cnn", "image_shape": (1, 2, 2), "batch_size": 16},
    "adamw_sine_squared_error": {
        "batch_size": 25,
        "optimizer": torch.optim.AdamW,
        "shape": "sine",
        "loss": "squared_error",
        "weight_decay": 1e-3,
    },
}


@pytest.mark.parametrize("params", CONTINUATIONS.values(), ids=CONTINUATIONS)
def test_warm_start_after_load_continues_exactly_as_the_original(
    params, blobs, tmp_path
):
    X, y = blobs
    original = DynamicalLossClassifier(**{**FAST, **params, "warm_start": True})
    original.fit(X, y)
    loaded = round_trip(original, tmp_path)
    # Changed hyperparameters are carried into the network alike (lr, amplitude).
    for clf in (original, loaded):
        clf.set_params(lr=5e-3, amplitude=4.0, max_epochs=4).fit(X, y)
    assert original.n_iter_ == 7
    assert_same_fit(loaded, original, X)


def test_partial_fit_after_load_continues_exactly_as_the_original(blobs, tmp_path):
    X, y = blobs
    original = DynamicalLossClassifier(**{**FAST, "batch_size": 16})
    for _ in range(2):
        original.partial_fit(X, y, classes=np.unique(y))
    loaded = round_trip(original, tmp_path)
    for _ in range(3):
        original.partial_fit(X, y)
        loaded.partial_fit(X, y)
    assert original.n_iter_ == 5
    assert_same_fit(loaded, original, X)


def test_a_loaded_model_refits_from_scratch_as_the_original(fitted, saved, blobs):
    X, y = blobs
    loaded = load(saved)
    loaded.fit(X, y)
    assert_same_fit(loaded, DynamicalLossClassifier(**FAST, batch_size=16).fit(X, y), X)


def test_a_random_state_instance_is_stored_with_its_state(blobs, tmp_path):
    X, y = blobs
    clf = DynamicalLossClassifier(**{**FAST, "random_state": np.random.RandomState(5)})
    clf.fit(X, y)
    loaded = round_trip(clf, tmp_path)
    assert loaded.random_state is loaded._built_params["random_state"]
    np.testing.assert_equal(
        loaded.random_state.get_state(), clf.random_state.get_state()
    )
    # The next fit draws the same seeds from it.
    assert_same_fit(loaded.fit(X, y), clf.fit(X, y), X)


def test_hyperparameters_changed_after_fit_are_kept_and_the_network_as_built(
    blobs, tmp_path
):
    X, y = blobs
    clf = DynamicalLossClassifier(**FAST).fit(X, y)
    clf.set_params(hidden_layer_sizes=(16, 16), lr=0.5)
    loaded = round_trip(clf, tmp_path)
    assert loaded.hidden_layer_sizes == (16, 16) and loaded.lr == 0.5
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # As for the original, warm start refuses the changed network.
    loaded.set_params(warm_start=True)
    with pytest.raises(ValueError, match="hidden_layer_sizes changed"):
        loaded.fit(X, y)


# ------------------------------------------------------------------ devices


def test_load_on_the_cpu_by_name(saved, fitted, blobs):
    X, _ = blobs
    loaded = load(saved, device="cpu")
    assert loaded.device_ == "cpu"
    assert next(loaded.module_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    with pytest.raises(ValueError, match="device must be"):
        load(saved, device="tpu")


@CPU_ONLY
def test_a_model_trained_on_cuda_loads_on_a_cpu_only_machine(fitted, saved, blobs):
    X, y = blobs

    def trained_on_cuda(meta):
        state = meta["classifier"]
        state["fitted"]["device_"] = "cuda:0"
        state["params"]["device"] = state["built_params"]["device"] = "cuda"
        for group in state["optimizer"]["param_groups"]:
            group["fused"] = True

    forge(saved, trained_on_cuda)
    with pytest.raises(ValueError, match="CUDA is not available"):
        load(saved, device="cuda")
    loaded = load(saved)  # device="auto": the CPU here
    assert loaded.device_ == "cpu" and loaded.device == "cuda"
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    # It trains on where it now is.
    loaded.set_params(warm_start=True).fit(X, y)
    assert loaded.n_iter_ == 2 * FAST["max_epochs"] and loaded.device_ == "cpu"


@pytest.mark.gpu
def test_a_cuda_model_loads_on_the_cpu_and_back(blobs, tmp_path):
    X, y = blobs
    gpu = DynamicalLossClassifier(**FAST, device="cuda").fit(X, y)
    on_cpu = round_trip(gpu, tmp_path, device="cpu")
    assert on_cpu.device_ == "cpu"
    np.testing.assert_allclose(on_cpu.predict_proba(X), gpu.predict_proba(X), atol=1e-6)
    on_gpu = round_trip(gpu, tmp_path, device="cuda")
    np.testing.assert_array_equal(on_gpu.predict_proba(X), gpu.predict_proba(X))
    on_cpu.set_params(warm_start=True).fit(X, y)
    assert on_cpu.n_iter_ == 2 * FAST["max_epochs"]


# ------------------------------------------------------------------- pipelines


def test_a_pipeline_of_scalers_and_the_classifier_round_trips(blobs, tmp_path):
    X, y = blobs
    X = 3.0 * X + 1.0
    pipe = make_pipeline(
        StandardScaler(),
        MinMaxScaler(feature_range=(-1, 1)),
        DynamicalLossClassifier(**{**FAST, "warm_start": True}),
    ).fit(X, y)
    loaded = round_trip(pipe, tmp_path)
    assert [name for name, _ in loaded.steps] == [name for name, _ in pipe.steps]
    assert loaded[1].feature_range == (-1, 1)
    np.testing.assert_array_equal(loaded[:-1].transform(X), pipe[:-1].transform(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    loaded.fit(X, y)
    pipe.fit(X, y)
    assert_same_fit(loaded[-1], pipe[-1], pipe[:-1].transform(X))


class Shift(TransformerMixin, BaseEstimator):
    """A transformer of the user's own: code, which load does not trust."""

    def fit(self, X, y=None):
        self.mean_ = np.mean(X, axis=0)
        return self

    def transform(self, X):
        return X - self.mean_


def test_pipelines_with_steps_skops_does_not_trust_are_refused(blobs, tmp_path):
    pytest.importorskip("skops")
    pipe = make_pipeline(Shift(), DynamicalLossClassifier(**FAST)).fit(*blobs)
    with pytest.raises(TypeError, match="Step 'shift' holds types .*Shift"):
        save(pipe, tmp_path / "pipe.skdl")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------- refusals


class Net(torch.nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, X):
        return self.linear(X)


class MyAdam(torch.optim.Adam):
    pass


class Noop(Callback):
    pass


def per_sample_ce(outputs, y):
    return torch.nn.functional.cross_entropy(outputs, y, reduction="none")


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("module", Net, "'module' parameter is a callable"),
        ("module", functools.partial(Net), "'module' parameter is a callable"),
        ("shape", lambda tau, a: 1 + (a - 1) * tau, "'shape' parameter is a callable"),
        ("loss", per_sample_ce, "'loss' parameter is a callable"),
        ("optimizer", MyAdam, "'optimizer' parameter is a callable .*MyAdam"),
        ("callbacks", [Noop()], "'callbacks' parameter holds skorch callbacks"),
    ],
)
def test_what_is_code_not_data_is_refused_at_save_time(
    name, value, match, blobs, tmp_path
):
    clf = DynamicalLossClassifier(**FAST).fit(*blobs)
    clf.set_params(**{name: value})  # set after fit: the refusal is of the parameter
    path = tmp_path / "model.skdl"
    with pytest.raises(ValueError, match=match):
        save(clf, path)
    assert not os.listdir(tmp_path)  # nothing written, not even half a file


def test_a_callable_the_network_was_built_with_is_refused_too(blobs, tmp_path):
    clf = DynamicalLossClassifier(**{**FAST, "module": Net}).fit(*blobs)
    clf.set_params(module="mlp")
    with pytest.raises(ValueError, match=r"'module' parameter \(as built\)"):
        save(clf, tmp_path / "model.skdl")


def test_no_callbacks_and_an_empty_list_are_data(blobs, tmp_path):
    clf = DynamicalLossClassifier(**{**FAST, "callbacks": []}).fit(*blobs)
    assert round_trip(clf, tmp_path).callbacks == []


def test_an_unfitted_estimator_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        save(DynamicalLossClassifier(), tmp_path / "model.skdl")
    assert not os.listdir(tmp_path)


def test_other_estimators_and_subclasses_are_refused(blobs, tmp_path):
    class Mine(DynamicalLossClassifier):
        pass

    with pytest.raises(TypeError, match="subclass"):
        save(Mine(**FAST).fit(*blobs), tmp_path / "a.skdl")
    with pytest.raises(TypeError, match="DynamicalLossClassifier"):
        save(StandardScaler().fit(blobs[0]), tmp_path / "b.skdl")


# --------------------------------------------------- damaged and hostile files


def test_a_flipped_byte_in_the_tensors_is_detected(fitted, saved):
    data = bytearray(saved.read_bytes())
    weight = fitted.module_[0].weight.detach().numpy().tobytes()
    at = data.find(weight)
    assert at > 0
    data[at + 5] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        load(saved)


def test_a_flipped_byte_in_the_json_is_detected(saved):
    data = bytearray(saved.read_bytes())
    at = data.find(b'"amplitude":10.0')
    assert at > 0
    data[at + len(b'"amplitude":')] = ord("9")
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load(saved)


def test_edited_json_is_detected(saved):
    payload = torch.load(saved, weights_only=True)
    meta = json.loads(payload["meta"])
    meta["classifier"]["params"]["amplitude"] = 99.0
    payload["meta"] = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    torch.save(payload, saved)
    with pytest.raises(ValueError, match="do not match their SHA-256 checksum"):
        load(saved)


def test_an_edited_tensor_is_detected(saved):
    payload = torch.load(saved, weights_only=True)
    payload["tensors"]["module.0.bias"] += 1e-6
    torch.save(payload, saved)
    with pytest.raises(ValueError, match="checksum"):
        load(saved)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_file_is_detected(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(keep * len(data))])
    with pytest.raises(ValueError, match="damaged or truncated"):
        load(saved)


def test_a_forged_checksum_does_not_get_past_the_contents_checks(saved):
    # A valid checksum only says the file is as it was written; what it holds is
    # still checked against what the hyperparameters build.
    def narrower(meta):
        params = meta["classifier"]["built_params"]
        params["hidden_layer_sizes"] = {"__tuple__": [7]}

    forge(saved, narrower)
    with pytest.raises(ValueError, match=r"0.weight is torch.float32 \(8, 4\)"):
        load(saved)


def test_forged_optimizer_state_is_refused(saved):
    def aliased(meta):
        state = meta["classifier"]["optimizer"]["state"]
        state["0"]["exp_avg"] = {"__tensor__": "module.0.weight"}

    def misshapen(tensors):
        tensors["optimizer.1.exp_avg"] = torch.zeros(3)

    original = saved.read_bytes()
    forge(saved, aliased)
    with pytest.raises(ValueError, match="not valid stored data"):
        load(saved)
    saved.write_bytes(original)
    forge(saved, lambda meta: None, misshapen)
    with pytest.raises(ValueError, match=r"exp_avg of parameter 1 has shape \(3,\)"):
        load(saved)


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda m: m["classifier"]["fitted"].update(net_="x"),
            "'net_' is not a fitted",
        ),
        (
            lambda m: m["classifier"]["params"].update(
                optimizer={"__torch_optim__": "os"}
            ),
            "not valid stored data",
        ),
        (
            lambda m: m["classifier"]["params"].update(lr={"__import__": "os"}),
            "unknown tag",
        ),
        (lambda m: m["classifier"]["params"].update(lr=-1.0), "'lr' parameter"),
        (lambda m: m["classifier"].pop("history"), "not those of a skdynloss model"),
    ],
)
def test_forged_contents_are_refused(saved, edit, match):
    forge(saved, edit)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_files_that_are_not_skdynloss_models_are_refused(tmp_path):
    cases = {
        "text.skdl": lambda p: p.write_text("not a model\n"),
        "empty.skdl": lambda p: p.write_bytes(b""),
        "state_dict.pt": lambda p: torch.save({"weight": torch.ones(2)}, p),
        "tensor.pt": lambda p: torch.save(torch.ones(2), p),
        "newer.skdl": lambda p: torch.save(
            {"format": "skdynloss-model", "format_version": 99}, p
        ),
        "no_tensors.skdl": lambda p: torch.save(
            {
                "format": "skdynloss-model",
                "format_version": 1,
                "meta": "{}",
                "tensors": [],
                "sha256": "",
            },
            p,
        ),
    }
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        match = "newer skdynloss" if name == "newer.skdl" else "not a skdynloss model"
        with pytest.raises(ValueError, match=match):
            load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.skdl")


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the attack a pickle file carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickle_payload_is_rejected_without_being_executed(saved, tmp_path):
    marker = tmp_path / "code-ran"
    # A plain pickle file, a joblib-style pickle of the estimator's format name, and a
    # torch zip file whose pickle names os.mkdir where the JSON text should be.
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"format": "skdynloss-model", "x": Payload(marker)}))
    zipped = tmp_path / "zipped.skdl"
    payload = torch.load(saved, weights_only=True)
    payload["meta"] = Payload(marker)
    torch.save(payload, zipped)
    for path in (plain, zipped):
        with pytest.raises(ValueError, match="not a skdynloss model"):
            load(path)
        assert not marker.exists()
    # The payloads do run when unpickled without restriction: the test is not vacuous.
    pickle.loads(plain.read_bytes())
    assert marker.exists()


def test_load_refuses_a_torch_whose_weights_only_loading_is_unsafe(saved, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(RuntimeError, match="torch >= 2.6"):
        load(saved)


# --------------------------------------------------- bounded, checked loading


def write_payload(path, meta_text, tensors, *, valid_checksum=True):
    """A file laid out as save writes one, with any JSON text and tensors."""
    digest = _persistence.checksum(meta_text, tensors) if valid_checksum else "0" * 64
    torch.save(
        {
            "format": "skdynloss-model",
            "format_version": 1,
            "meta": meta_text,
            "tensors": tensors,
            "sha256": digest,
        },
        path,
    )


def test_a_view_larger_than_its_storage_is_refused_before_it_is_copied(saved):
    # One float stored, viewed as 2**40 of them (stride 0): the file is tiny, and
    # copying the view out (as the checksum would) needs 4 TiB.
    payload = torch.load(saved, weights_only=True)
    huge = torch.zeros(1).expand(2**40)
    for tensors in (
        {**payload["tensors"], "module.0.bias": huge},
        {"a": torch.arange(10.0)[2:]},  # a view into part of a storage
        {"a": torch.zeros(4, 4).t()},  # not contiguous
    ):
        write_payload(saved, payload["meta"], tensors, valid_checksum=False)
        assert saved.stat().st_size < 100_000
        with pytest.raises(ValueError, match="is a view"):
            load(saved)
    shared = torch.zeros(8)
    write_payload(
        saved, payload["meta"], {"a": shared, "b": shared}, valid_checksum=False
    )
    with pytest.raises(ValueError, match="is a view"):
        load(saved)


def test_compressed_and_foreign_zip_records_are_refused(saved, tmp_path):
    import zipfile

    original = zipfile.ZipFile(saved)
    for name, compression, extra in [
        ("deflated.skdl", zipfile.ZIP_DEFLATED, None),
        ("extra.skdl", zipfile.ZIP_STORED, "archive/payload.py"),
    ]:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression) as archive:
            for info in original.infolist():
                archive.writestr(info.filename, original.read(info.filename))
            if extra:
                archive.writestr(extra, b"print('hello')")
        with pytest.raises(ValueError, match="is not one that torch.save writes"):
            load(path)


def test_a_declared_string_dtype_is_refused_not_allocated(saved):
    # 70 bytes of JSON asking for 2 GiB per label.
    forge(
        saved,
        lambda m: m["classifier"]["fitted"]["classes_"].update(
            __ndarray__="<U536870911"
        ),
    )
    with pytest.raises(ValueError, match="larger than a file of its size"):
        load(saved)
    for dtype in ("(1000000,)f8", "V1000000", "<M8", "S5", 7, {"names": ["a"]}):
        forge(
            saved,
            lambda m, dtype=dtype: m["classifier"]["fitted"]["classes_"].update(
                __ndarray__=dtype
            ),
        )
        with pytest.raises(ValueError, match="dtype"):
            load(saved)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_clear_error(saved, depth):
    payload = torch.load(saved, weights_only=True)
    meta = payload["meta"][:-1] + ',"deep":' + "[" * depth + "]" * depth + "}"
    write_payload(saved, meta, payload["tensors"])
    with pytest.raises(ValueError, match="nested"):
        load(saved)


def test_a_network_larger_than_the_file_is_refused_before_it_is_built(saved):
    def huge(meta):
        meta["classifier"]["built_params"]["hidden_layer_sizes"] = {
            "__tuple__": [100_000, 100_000]
        }

    forge(saved, huge)
    with pytest.raises(ValueError, match="network of 10,000,.* the file holds 67"):
        load(saved)


def _set(section, **values):
    return lambda m: m["classifier"][section].update(values)


def _history_row(index, **values):
    return lambda m: m["classifier"]["history"][index].update(values)


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set("fitted", n_iter_="3"), "n_iter_ is '3'"),
        (_set("fitted", n_iter_=2), "n_iter_ is 2, but the history holds 3"),
        (_set("fitted", n_iter_=True), "n_iter_ is True"),
        (lambda m: m["classifier"]["history"].pop(), "the history holds 2"),
        (_history_row(1, epoch=5), "History row 1 is numbered 5"),
        (_history_row(0, train_loss="low"), "History row 0 has train_loss='low'"),
        (_history_row(2, class_weights=[1.0, 1.0]), "History row 2 .* 3 class weights"),
        (lambda m: m["classifier"]["history"][0].pop("loss_time"), "loss_time=None"),
        (
            lambda m: m["classifier"]["history"].__setitem__(0, [1]),
            "History row 0 is not a dict",
        ),
        (_set("fitted", sharpness_="sharp"), "sharpness_ to 'sharp'"),
        (_set("fitted", sharpness_info_=[1]), "sharpness_info_"),
        (_set("fitted", diverged_="no"), "diverged_ to 'no'"),
        (_set("fitted", device_=3), "device_"),
        (_set("fitted", validation_scores_=[0.5]), "validation_scores_"),
        (_set("fitted", best_validation_score_=0.5), "best_validation_score_"),
        (
            _set(
                "fitted",
                classes_={"__ndarray__": "<i8", "shape": [3], "values": [2, 1, 0]},
            ),
            "classes_ must be the sorted",
        ),
        (
            _set(
                "fitted",
                classes_={"__ndarray__": "<i8", "shape": [3], "values": [0, 0, 1]},
            ),
            "classes_ must be the sorted",
        ),
        (
            _set(
                "fitted",
                classes_={"__ndarray__": "<i8", "shape": [4], "values": [0, 1, 2]},
            ),
            "not valid stored data",
        ),
        (
            _set(
                "fitted",
                classes_={"__ndarray__": "<f8", "shape": [3], "values": [0, 1, 1e999]},
            ),
            "NaN or infinity",
        ),
        (
            _set(
                "fitted",
                classes_={"__ndarray__": "<i8", "shape": [3], "values": [0, 1, 2**70]},
            ),
            "not valid stored data",
        ),
        (
            _set(
                "fitted",
                feature_names_in_={
                    "__ndarray__": "|O",
                    "shape": [4],
                    "values": [1, 2, 3, 4],
                },
            ),
            "feature_names_in_",
        ),
        (lambda m: m["classifier"].update(seeds=[-1, 0, 0, 0]), "seeds"),
        (lambda m: m["classifier"].update(seeds=[0, 0, 0]), "seeds"),
        (_set("criterion", amplitude="big"), "criterion.amplitude"),
        (_set("criterion", period=0.0), "criterion.period"),
        (_set("criterion", shape="os.system"), "criterion.shape"),
        (_set("criterion", time=1e999), "criterion.time"),
        (lambda m: m["classifier"]["criterion"].pop("time"), "loss's state"),
        (
            lambda m: m["classifier"]["callbacks"]["loss_clock"].update(on_epoch_end=1),
            "'on_epoch_end' is not an attribute name",
        ),
        (
            lambda m: m["classifier"]["callbacks"]["loss_clock"].update(_step="12"),
            "_step is '12'",
        ),
        (
            lambda m: m["classifier"]["optimizer"]["param_groups"][0].update(lr="x"),
            "setting lr='x'",
        ),
        (
            lambda m: m["classifier"]["optimizer"]["param_groups"][0].update(
                amsgrad=True
            ),
            "setting amsgrad=True",
        ),
        (
            lambda m: m["classifier"]["optimizer"]["param_groups"][0].update(
                momentum_buffer=0.9
            ),
            "settings .* are not those",
        ),
        (
            lambda m: m["classifier"]["optimizer"]["param_groups"][0].update(
                params=[0, 1, 2]
            ),
            "parameter groups",
        ),
        (
            lambda m: m["classifier"]["optimizer"]["state"].update(
                {str(i): {} for i in range(4, 9)}
            ),
            "more parameters than it has",
        ),
    ],
)
def test_forged_fitted_state_is_refused(saved, edit, match):
    # What an edited file with a recomputed checksum holds is checked as fit makes it.
    forge(saved, edit)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_the_loaded_model_has_every_fitted_attribute_of_the_saved_one(fitted, saved):
    loaded = load(saved)
    public = {k for k in vars(fitted) if k.endswith("_") and not k.startswith("_")}
    assert public <= set(vars(loaded))
    assert loaded.period_ == fitted.period_


# ------------------------------------------------------- writing, and failing to


def test_save_and_load_refuse_files_opened_in_text_mode(fitted, saved, tmp_path):
    with (
        open(tmp_path / "text.skdl", "w") as file,
        pytest.raises(TypeError, match="text mode"),
    ):
        save(fitted, file)
    with open(saved) as file, pytest.raises(TypeError, match="text mode"):
        load(file)


def test_save_refuses_what_load_would_not_read_back_and_writes_nothing(blobs, tmp_path):
    clf = DynamicalLossClassifier(**FAST).fit(*blobs)
    clf.n_iter_ = 99  # no longer the number of epochs in its history
    path = tmp_path / "model.skdl"
    with pytest.raises(ValueError, match="load reads back.*n_iter_ is 99"):
        save(clf, path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_a_clear_os_error(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="Cannot save to .*missing"):
        save(fitted, tmp_path / "missing" / "model.skdl")


_FULL_DISK = """
import resource, signal, sys
import numpy as np
from sklearn.datasets import make_blobs
import skdynloss
X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
clf = skdynloss.DynamicalLossClassifier(
    hidden_layer_sizes=(64,), max_epochs=1, compute_sharpness=False, random_state=0
).fit(X, y)
# Writes beyond the limit fail with EFBIG, as on a full disk (and do not kill us).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    skdynloss.save(clf, sys.argv[1])
except OSError as exc:
    print(type(exc).__name__, exc.errno, exc, "|context:", type(exc.__context__).__name__)
    sys.exit(0)
print("saved")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE needs a Unix")
def test_a_write_that_fails_part_way_is_an_os_error_and_keeps_the_old_file(
    saved, tmp_path
):
    import errno
    import subprocess
    import sys

    resource = pytest.importorskip("resource")
    assert resource.RLIMIT_FSIZE
    before = saved.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(saved), str(len(before) // 2)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith(f"OSError {errno.EFBIG} ")
    assert "Could not write the model to" in out and str(saved) in out
    assert "previous file, if any, is unchanged" in out
    assert "unexpected pos" not in out
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved.name]
    load(saved)


def test_a_callbacks_settings_cannot_be_changed_by_the_file(blobs, tmp_path):
    clf = DynamicalLossClassifier(**FAST, early_stopping=True).fit(*blobs)
    path = tmp_path / "model.skdl"
    save(clf, path)
    forge(
        path,
        lambda m: m["classifier"]["callbacks"]["early_stopping"].update(
            monitor="train_loss"
        ),
    )
    with pytest.raises(ValueError, match="monitor is 'train_loss'.*'valid_acc'"):
        load(path)


def test_the_optimizers_kernel_is_chosen_for_the_loading_machine(saved, fitted, blobs):
    # A model trained where Adam has no fused kernel (foreach instead) loads with the
    # kernel of this machine, and continues as the original.
    def elsewhere(meta):
        meta["classifier"]["optimizer"]["param_groups"][0].update(
            fused=None, foreach=True, capturable=True
        )

    forge(saved, elsewhere)
    loaded = load(saved, device="cpu")
    group = loaded.net_.optimizer_.param_groups[0]
    assert group["fused"] is True and group["capturable"] is False
    X, y = blobs
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


@pytest.mark.parametrize("labels", [[0, 1], [0, 1, 2, 3]])
def test_classes_must_match_the_networks_output_layer(saved, labels):
    def other_classes(meta):
        meta["classifier"]["fitted"]["classes_"] = {
            "__ndarray__": "<i8",
            "shape": [len(labels)],
            "values": labels,
        }

    forge(saved, other_classes)
    match = (
        r"2.weight is torch.float32 \(3, 8\) in the file, but torch.float32 \(2, 8\)"
        if len(labels) == 2
        else "network of 76 parameters, but the file holds 67"
    )
    with pytest.raises(ValueError, match=match):
        load(saved)
