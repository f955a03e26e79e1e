"""slim's copy path: the checkpoint's index read without torch, the weight records copied file to file, the
result the same file, record for record, as the torch path writes; and every file the index cannot vouch for
taken by the torch path instead."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import torch
from support.original import NARROW, build_model, save

from chclip_convert import slim_checkpoint
from chclip_convert.changes import slim as slim_module
from chclip_convert.errors import CheckpointReadError, UnsupportedCheckpointError
from chclip_convert.files.archive import SERIALIZATION_ID
from chclip_convert.files.checkpoint import index_checkpoint, load_checkpoint
from chclip_convert.files.pickle_index import STORAGE_ITEMSIZE


@pytest.fixture(scope="module")
def training_file(tmp_path_factory):
    """cn_clip's training dict for the narrow model, with fp16 tensors beside fp32 ones and AdamW moments."""
    state = build_model(NARROW, seed=8).state_dict()
    state = {k: v.half() if i % 3 == 0 and v.is_floating_point() else v for i, (k, v) in enumerate(state.items())}
    moments = {i: {"step": torch.tensor(7.0), "exp_avg": torch.randn(v.shape)} for i, v in enumerate(state.values())}
    data = {"epoch": 2, "step": 7, "name": "copy", "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": moments, "param_groups": [{"lr": 1e-5, "params": list(moments)}]}}  # fmt: skip
    return save(data, tmp_path_factory.mktemp("copy") / "epoch2.pt")


def records(path) -> dict[str, bytes]:
    """Every record of a torch archive by its name below the archive's folder, but the random serialization id."""
    with zipfile.ZipFile(path) as archive:
        found = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    return {name: data for name, data in found.items() if name != SERIALIZATION_ID}


def test_the_index_describes_what_torch_load_reads(training_file):
    indexed, loaded = index_checkpoint(training_file), load_checkpoint(training_file)
    assert indexed is not None
    assert (indexed.wrapper, indexed.had_module_prefix, indexed.metadata, indexed.skipped) == (
        loaded.wrapper, loaded.had_module_prefix, loaded.metadata, loaded.skipped)  # fmt: skip
    assert list(indexed.state_dict) == list(loaded.state_dict) and indexed.records == loaded.records
    for key, tensor in loaded.state_dict.items():
        ref = indexed.state_dict[key]
        assert ref.shape == tuple(tensor.shape) and ref.stride == tensor.stride()
        assert STORAGE_ITEMSIZE[ref.storage] == tensor.element_size() and ref.nbytes == tensor.nbytes


def test_the_copy_path_writes_the_torch_path_s_file_without_importing_torch(training_file, tmp_path, monkeypatch):
    copied = tmp_path / "copied.pt"
    script = (  # the command, as a user runs it
        "import sys; from chclip_convert.cli.main import main; "
        f"code = main(['slim', {str(training_file)!r}, {str(copied)!r}, '--no-progress']); "
        "print(code, 'torch' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert ran.stdout.splitlines()[-1] == "0 False", ran.stdout + ran.stderr
    monkeypatch.setattr(slim_module, "index_checkpoint", lambda path: None)  # as for a file the index cannot read
    through_torch = slim_checkpoint(training_file, tmp_path / "torch.pt")
    assert through_torch.cast == 0
    assert records(copied) == records(tmp_path / "torch.pt")  # data.pkl and every weight record, byte for byte
    data = torch.load(copied, weights_only=True, mmap=True)
    source = torch.load(training_file, weights_only=True, mmap=True)
    assert all(torch.equal(data["state_dict"][k], v) and data["state_dict"][k].dtype == v.dtype
               for k, v in source["state_dict"].items())  # fmt: skip


def shared_storage(state):
    """Two keys viewing one storage: torch.save writes one record for both."""
    first = next(k for k, v in state.items() if v.dim() == 2)
    return {**state, "extra.view": state[first][:1]}


def as_parameters(state):
    """Parameters, not tensors: torch.save pickles them through ``_rebuild_parameter``, a name the index does not
    know."""
    return {k: torch.nn.Parameter(v, requires_grad=False) if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.parametrize("change", [shared_storage, as_parameters], ids=["shared storage", "parameters"])
def test_a_file_the_index_cannot_vouch_for_is_slimmed_through_torch(change, tmp_path):
    state = change(build_model(NARROW, seed=9).state_dict())
    path = save({"epoch": 1, "state_dict": state, "optimizer": {}}, tmp_path / "odd.pt")
    assert index_checkpoint(path) is None
    summary = slim_checkpoint(path, tmp_path / "slim.pt")
    data = torch.load(tmp_path / "slim.pt", weights_only=True)["state_dict"]
    assert summary.dropped == ("optimizer",) and list(data) == list(state)
    assert all(torch.equal(data[k], v.detach()) for k, v in state.items())


def test_a_legacy_file_is_left_to_torch(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"a.weight": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert index_checkpoint(path) is None


def rezipped(source, target, *, compression=zipfile.ZIP_STORED, replace=None, add=None):
    """``source``'s archive written again by zipfile: records by name ending replaced, records added."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", compression) as new:
        folder = old.namelist()[0].split("/", 1)[0]
        for name in old.namelist():
            ending = name.split("/", 1)[1]
            new.writestr(name, (replace or {}).get(ending, old.read(name)))
        for ending, data in (add or {}).items():
            new.writestr(f"{folder}/{ending}", data)
    return target


def small_file(tmp_path, **extra):
    state = build_model(NARROW, seed=10).state_dict()
    return save({"epoch": 1, "state_dict": state, **extra}, tmp_path / "small.pt"), state


def test_another_byte_order_is_left_to_torch(tmp_path):
    path, _ = small_file(tmp_path)
    assert index_checkpoint(path) is not None
    assert index_checkpoint(rezipped(path, tmp_path / "big.pt", replace={"byteorder": b"big"})) is None


def test_a_compressed_record_is_never_copied(tmp_path):
    path = rezipped(small_file(tmp_path)[0], tmp_path / "deflated.pt", compression=zipfile.ZIP_DEFLATED)
    assert index_checkpoint(path) is None
    with pytest.raises(CheckpointReadError):  # torch.load's own refusal, in our words
        load_checkpoint(path)


def test_records_are_found_by_their_whole_name(tmp_path):
    path, state = small_file(tmp_path)
    path = rezipped(path, tmp_path / "extra.pt", add={"data/extra/0": b"\x09" * 4096})  # ends like data/0
    assert index_checkpoint(path) is not None
    slim_checkpoint(path, tmp_path / "slim.pt")
    data = torch.load(tmp_path / "slim.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(data[k], v) for k, v in state.items())


def test_tensors_among_the_metadata_are_left_to_torch(tmp_path):
    path, _ = small_file(tmp_path, step=torch.tensor(7))
    assert index_checkpoint(path) is None


@pytest.mark.parametrize(
    "holding", [lambda state: torch.ones(3), lambda state: {**state, "b": torch.ones(3).storage()}],
    ids=["a bare tensor", "a storage in the state dict"],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # the typed storage torch.save names by class
def test_what_is_not_a_state_dict_gets_torch_s_error(holding, tmp_path):
    path = save(holding(build_model(NARROW, seed=10).state_dict()), tmp_path / "odd.pt")
    assert index_checkpoint(path) is None
    with pytest.raises(UnsupportedCheckpointError):
        slim_checkpoint(path, tmp_path / "slim.pt")
    assert not (tmp_path / "slim.pt").exists()
