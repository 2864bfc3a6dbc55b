import hashlib
import io
import json
import multiprocessing
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hesslib import store as store_module
from hesslib.store import (
    STORE_ENV,
    CorruptEntryError,
    Entry,
    Store,
    StoreError,
    atomic_torch_save,
    atomic_write_bytes,
    config_key,
    environment_fingerprint,
)

CONFIG = {
    "model": "C1",
    "batch_size": 128,
    "optim": {"lr": 0.1, "momentum": 0.9, "milestones": (30, 60)},
    "seed": 0,
}


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def _changed(config, path, value):
    """Return a deep copy of ``config`` with ``path`` set to ``value``."""
    copy = json.loads(json.dumps(config))
    target = copy
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return copy


# ---------------------------------------------------------------------- keys


def test_same_config_same_key():
    assert config_key("model", CONFIG) == config_key("model", dict(CONFIG))
    assert Store.key("model", CONFIG) == config_key("model", CONFIG)


def test_key_independent_of_dict_order():
    reordered = {name: CONFIG[name] for name in reversed(list(CONFIG))}
    reordered["optim"] = dict(reversed(list(CONFIG["optim"].items())))
    assert config_key("model", reordered) == config_key("model", CONFIG)


def test_tuple_and_list_give_the_same_key():
    as_list = _changed(CONFIG, ("optim", "milestones"), [30, 60])
    assert config_key("model", as_list) == config_key("model", CONFIG)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("model",), "C2"),
        (("batch_size",), 256),
        (("seed",), 1),
        (("optim", "lr"), 0.1 * (1 + 1e-9)),
        (("optim", "momentum"), 0.0),
        (("optim", "milestones"), [30, 61]),
        (("batch_size",), 128.0),
        (("extra",), None),
    ],
)
def test_changing_any_field_changes_the_key(path, value):
    assert config_key("model", _changed(CONFIG, path, value)) != config_key(
        "model", CONFIG
    )


def test_kind_is_part_of_the_key():
    assert config_key("model", CONFIG) != config_key("spectrum", CONFIG)


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"root": Path("/data")}, TypeError, r"config\['root'\] is .*PosixPath"),
        ({"a": {"b": [1, {2}]}}, TypeError, r"config\['a'\]\['b'\]\[1\]"),
        ({"lr": float("nan")}, ValueError, r"config\['lr'\] is nan"),
        ({1: "x"}, TypeError, r"key 1 of type int.*str\(\)"),
        ({"x": torch.ones(1)}, TypeError, r"config\['x'\].*Tensor"),
    ],
)
def test_non_json_config_is_rejected(config, error, match):
    with pytest.raises(error, match=match):
        config_key("model", config)


def test_bad_kind_and_bad_config_type_are_rejected():
    with pytest.raises(ValueError, match=r"kind '\.\./x' is not a plain name"):
        config_key("../x", {})
    with pytest.raises(TypeError, match="config is a list; pass a mapping"):
        config_key("model", [1, 2])


def test_numpy_float_keys_like_float():
    assert config_key("m", {"lr": np.float64(0.1)}) == config_key("m", {"lr": 0.1})


def test_environment_fingerprint():
    fingerprint = environment_fingerprint(torch.device("cpu"))
    assert fingerprint["device_type"] == "cpu"
    assert fingerprint["torch"] == torch.__version__
    assert environment_fingerprint("cuda:1")["device_type"] == "cuda"


# ---------------------------------------------------------------- round trips


def test_tensor_round_trip(store):
    tensors = {"eigenvalues": torch.arange(5.0), "mask": torch.tensor([True, False])}
    entry = store.put_tensors("spectrum", CONFIG, tensors)
    assert isinstance(entry, Entry)
    assert entry.files == ("tensors.pt",)
    loaded = store.get_tensors("spectrum", CONFIG)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)


def test_state_dict_round_trip(store):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    store.put_state_dict("model", CONFIG, model)
    copy = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    copy.load_state_dict(store.get_state_dict("model", CONFIG))
    for name, value in model.state_dict().items():
        assert torch.equal(copy.state_dict()[name], value), name


def test_json_round_trip_keeps_order_and_nan(store):
    table = {"rows": [{"batch": 128, "acc": 0.9}], "lambda": float("inf")}
    store.put_json("table", CONFIG, table)
    loaded = store.get_json("table", CONFIG)
    assert list(loaded) == ["rows", "lambda"]
    assert loaded == table


def test_put_rejects_bad_payloads(store):
    with pytest.raises(TypeError, match=r"tensors\['w'\] is a list"):
        store.put_tensors("spectrum", CONFIG, {"w": [1.0]})
    with pytest.raises(TypeError, match=r"data\['x'\] is .* set"):
        store.put_json("table", CONFIG, {"x": {1}})
    with pytest.raises(ValueError, match="file name '../evil'"):
        store.put("raw", CONFIG, {"../evil": b""})
    with pytest.raises(ValueError, match="'config.json' is reserved"):
        store.put("raw", CONFIG, {"config.json": b"{}"})
    with pytest.raises(TypeError, match=r"files\['a'\] is a str; pass bytes"):
        store.put("raw", CONFIG, {"a": "text"})
    assert store.list() == []


def test_get_missing_returns_none(store):
    assert store.get("model", CONFIG) is None
    assert store.get_tensors("model", CONFIG) is None
    assert store.get_json("model", CONFIG) is None
    assert not store.has("model", CONFIG)


def test_entry_record(store, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01")
    parent = store.put("raw", CONFIG, {"a.bin": b"abc", "weights.bin": source})
    child = store.put_json("table", {"of": parent.key}, [1], parents=[parent])
    assert parent.file("weights.bin").read_bytes() == b"\x00\x01"
    record = json.loads((child.path / "config.json").read_text())
    assert record["parents"] == [f"raw/{parent.key}"]
    assert record["config"] == {"of": parent.key}
    assert set(record["versions"]) == {"hesslib", "python", "torch", "numpy"}
    assert record["revision"]  # a commit, or "unknown" outside a checkout
    manifest = json.loads((parent.path / "manifest.json").read_text())["files"]
    assert set(manifest) == {"a.bin", "weights.bin", "config.json"}
    assert manifest["a.bin"]["size"] == 3
    assert child.path == store.root / "table" / child.key
    with pytest.raises(StoreError, match="has no file 'b.bin'"):
        parent.file("b.bin")
    with pytest.raises(ValueError, match="parent 'raw' is neither"):
        store.put_json("table", {}, [], parents=["raw"])


def test_writer_callback_and_second_put_keeps_first(store):
    calls = []

    def writer(folder):
        calls.append(folder)
        (folder / "out.txt").write_bytes(b"first")

    first = store.put("raw", CONFIG, writer)
    second = store.put("raw", CONFIG, {"out.txt": b"second"})
    assert second.path == first.path
    assert second.file("out.txt").read_bytes() == b"first"
    assert len(calls) == 1


# ------------------------------------------------------------------ integrity


def test_crash_before_rename_leaves_no_entry(store, monkeypatch):
    def crash(*args):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.put("raw", CONFIG, {"a": b"x"})
    monkeypatch.undo()
    assert not store.has("raw", CONFIG)
    assert store.get("raw", CONFIG) is None
    assert store.list() == []
    assert list((store.root / ".tmp").iterdir()) == []
    assert store.put("raw", CONFIG, {"a": b"x"}).file("a").read_bytes() == b"x"


def test_crash_leftovers_are_ignored_and_cleaned(store):
    leftover = store.root / ".tmp" / "raw-0123456789abcdef-killed"
    leftover.mkdir(parents=True)
    (leftover / "a").write_bytes(b"half")
    assert store.list() == []
    assert store.clean_tmp() == 0  # young: might be a writer still running
    assert store.clean_tmp(older_than=0.0) == 1
    assert not leftover.exists()


def test_flipped_byte_is_detected(store):
    entry = store.put_tensors("spectrum", CONFIG, {"v": torch.zeros(100)})
    payload = entry.file("tensors.pt")
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    match = rf"{payload}: file 'tensors.pt' does not match"
    with pytest.raises(CorruptEntryError, match=match):
        store.get("spectrum", CONFIG)
    with pytest.raises(CorruptEntryError, match="tensors.pt"):
        store.get_tensors("spectrum", CONFIG)
    assert store.get("spectrum", CONFIG, verify=False) is not None


def test_extra_or_missing_file_is_detected(store):
    entry = store.put("raw", CONFIG, {"a": b"x"})
    (entry.path / "b").write_bytes(b"y")
    with pytest.raises(CorruptEntryError, match=r"holds files \['a', 'b'"):
        store.get("raw", CONFIG)
    (entry.path / "b").unlink()
    (entry.path / "a").unlink()
    with pytest.raises(CorruptEntryError, match="manifest lists"):
        store.get("raw", CONFIG)


def test_moved_entry_is_detected(store):
    entry = store.put("raw", CONFIG, {"a": b"x"})
    other = store.root / "raw" / config_key("raw", {"other": 1})
    entry.path.rename(other)
    with pytest.raises(CorruptEntryError, match="does not describe"):
        store.get("raw", {"other": 1})


def _race(root, barrier, payload):
    barrier.wait()
    Store(root).put("raw", CONFIG, {"a": payload})


def test_concurrent_writers_leave_one_valid_entry(store):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    payloads = [b"one" * 1000, b"two" * 1000]
    workers = [
        context.Process(target=_race, args=(str(store.root), barrier, payload))
        for payload in payloads
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    entry = store.get("raw", CONFIG)  # verified against its manifest
    assert entry.file("a").read_bytes() in payloads
    assert [info.key for info in store.list()] == [entry.key]
    assert list((store.root / ".tmp").iterdir()) == []


def test_writer_that_loses_the_rename_keeps_the_first(store):
    def writer(folder):
        # Another writer finishes the same entry while this one is writing.
        Store(store.root).put("raw", CONFIG, {"a": b"first"})
        (folder / "a").write_bytes(b"second")

    entry = store.put("raw", CONFIG, writer)
    assert entry.file("a").read_bytes() == b"first"
    assert list((store.root / ".tmp").iterdir()) == []


def test_lock_allows_put_inside(store):
    with store.lock("model", CONFIG):
        store.put("model", CONFIG, {"a": b"x"})
    assert (store.root / ".locks" / "model").is_dir()


def test_atomic_helpers(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"new")
    assert path.read_bytes() == b"new"
    atomic_torch_save({"step": torch.tensor(3)}, path)
    assert torch.load(path, weights_only=True)["step"].item() == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.bin"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = atomic_write_bytes(tmp_path / "a.bin", b"old")

    def crash(*args):
        raise OSError("simulated crash before replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


# ---------------------------------------------------------- export and import


def _fill(store):
    model = store.put_tensors("model", CONFIG, {"w": torch.randn(4, 3)})
    table = store.put_json("table", {"k": 1}, {"acc": 0.5}, parents=[model])
    return model, table


@pytest.mark.parametrize("name", ["all.tar", "all.tar.gz"])
def test_export_import_round_trip(store, tmp_path, name):
    model, table = _fill(store)
    archive = store.export(tmp_path / name)
    fresh = Store(tmp_path / "fresh")
    imported = fresh.import_archive(archive)
    assert sorted(info.ref for info in imported) == sorted([model.ref, table.ref])
    for entry in (model, table):
        copy = fresh.get_by_key(entry.kind, entry.key)
        assert copy.config == entry.config and copy.created == entry.created
        for file in ("config.json", *entry.files):
            assert (copy.path / file).read_bytes() == (entry.path / file).read_bytes()
    assert fresh.import_archive(archive)  # already present: kept, no error


def test_export_selected_entries(store, tmp_path):
    model, _ = _fill(store)
    fresh = Store(tmp_path / "fresh")
    fresh.import_archive(store.export(tmp_path / "one.tar", [model]))
    assert [info.ref for info in fresh.list()] == [model.ref]
    with pytest.raises(StoreError, match="no entry model/0000000000000000"):
        store.export(tmp_path / "x.tar", ["model/0000000000000000"])


def _rewrite(archive, target, change):
    """Copy ``archive`` to ``target`` passing each member's bytes through change."""
    with tarfile.open(archive) as source, tarfile.open(target, "w") as sink:
        for member in source.getmembers():
            data = change(member.name, source.extractfile(member).read())
            member.size = len(data)
            sink.addfile(member, io.BytesIO(data))
    return target


def test_tampered_archive_is_refused(store, tmp_path):
    model, _ = _fill(store)
    archive = store.export(tmp_path / "all.tar")

    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(".pt") else data

    tampered = _rewrite(archive, tmp_path / "bad.tar", flip)
    fresh = Store(tmp_path / "fresh")
    with pytest.raises(CorruptEntryError, match=r"bad.tar refused.*tensors.pt"):
        fresh.import_archive(tampered)
    assert fresh.list() == []
    assert list((fresh.root / ".tmp").iterdir()) == []


def test_archive_with_edited_config_is_refused(store, tmp_path):
    _fill(store)
    archive = store.export(tmp_path / "all.tar")

    def edit(name, data):
        return data.replace(b'"C1"', b'"C2"') if name.endswith("config.json") else data

    with pytest.raises(CorruptEntryError, match="refused"):
        Store(tmp_path / "fresh").import_archive(
            _rewrite(archive, tmp_path / "bad.tar", edit)
        )


def test_archive_with_foreign_paths_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as sink:
        sink.add(__file__, "../escape/0123456789abcdef/a")
    with pytest.raises(CorruptEntryError, match="not a <kind>/<key>/<file>"):
        Store(tmp_path / "fresh").import_archive(archive)
    assert not (tmp_path / "escape").exists()


# ---------------------------------------------------------- list and remove


def test_list_and_remove(store):
    model, table = _fill(store)
    assert {info.ref for info in store.list()} == {model.ref, table.ref}
    assert [info.ref for info in store.list("table")] == [table.ref]
    assert store.list("absent") == []
    assert store.remove("table", table.key)
    assert not store.remove("table", table.key)
    assert [info.ref for info in store.list()] == [model.ref]
    assert store.get_json("table", {"k": 1}) is None


def test_list_warns_about_unreadable_entries(store):
    model, _ = _fill(store)
    (model.path / "config.json").write_text("{broken")
    with pytest.warns(UserWarning, match="skipping entry"):
        infos = store.list()
    assert [info.kind for info in infos] == ["table"]


def test_workdir(store):
    work = store.workdir("model", CONFIG)
    assert work == store.root / ".work" / "model" / config_key("model", CONFIG)
    atomic_torch_save({"epoch": 1}, work / "checkpoint.pt")
    assert store.workdir("model", CONFIG) == work
    assert store.list() == []
    store.remove_workdir("model", CONFIG)
    assert not work.exists()


# ---------------------------------------------------------------------- root


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "from-env"))
    assert Store().root == tmp_path / "from-env"
    assert Store(tmp_path / "arg").root == tmp_path / "arg"


def test_default_root(tmp_path, monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert Store().root == tmp_path.resolve() / ".store"
    assert not (tmp_path / ".store").exists()  # created on first write only


def test_module_exports():
    assert set(store_module.__all__) <= set(dir(store_module))


def test_archive_with_edited_config_and_manifest_is_refused(store, tmp_path):
    _fill(store)
    archive = store.export(tmp_path / "all.tar")
    edited = {}

    def edit(name, data):
        if name.endswith("config.json"):
            data = data.replace(b'"C1"', b'"C2"')
            edited[name.rsplit("/", 1)[0]] = data
        return data

    first = _rewrite(archive, tmp_path / "first.tar", edit)

    def fix_manifest(name, data):
        folder, _, file = name.rpartition("/")
        if file != "manifest.json" or folder not in edited:
            return data
        manifest = json.loads(data)
        config = edited[folder]
        digest = hashlib.sha256(config).hexdigest()
        manifest["files"]["config.json"] = {"sha256": digest, "size": len(config)}
        return json.dumps(manifest).encode()

    forged = _rewrite(first, tmp_path / "forged.tar", fix_manifest)
    with pytest.raises(CorruptEntryError, match="does not describe a 'model' entry"):
        Store(tmp_path / "fresh").import_archive(forged)
