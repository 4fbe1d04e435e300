"""Safe reading (zoe_lightning.weights.io): what is refused, and that the message is one line naming
the file and the reason."""

import os
import pickle

import pytest
import torch

from zoe_lightning.errors import UserError
from zoe_lightning.weights import load_model, read_checkpoint


class _Payload:
    """Unpickling this object calls ``marker.touch()``: a file appears if any code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mknod if hasattr(os, "mknod") else open, (str(self.marker),))


def _one_line_naming(exc_info, path, *words):
    message = str(exc_info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def _evil_files(tmp_path):
    marker = tmp_path / "payload_ran"
    zip_file, legacy = tmp_path / "evil_zip.pt", tmp_path / "evil_legacy.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, zip_file)
    with open(legacy, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, f, protocol=2)
    return marker, [zip_file, legacy]


def test_the_payload_is_real(tmp_path):
    # control: an unsafe load of the same file does run the code, so the refusals below mean something
    marker, (zip_file, _) = _evil_files(tmp_path)
    torch.load(zip_file, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("variable", ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None])
def test_pickled_code_is_refused_even_when_the_environment_asks_for_unsafe_loads(tmp_path, monkeypatch, variable):
    if variable:
        monkeypatch.setenv(variable, "1")
    marker, files = _evil_files(tmp_path)
    for path in files:
        with pytest.raises(UserError) as info:
            read_checkpoint(path)
        _one_line_naming(info, path, "refused", "weights_only")
        with pytest.raises(UserError):
            load_model(path)
    assert not marker.exists(), "the pickled payload ran"
    if variable:
        assert os.environ[variable] == "1"  # the variable is hidden only while torch.load runs


def test_a_module_object_needs_code_and_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "obj": torch.nn.Linear(1, 1)}, path)
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    _one_line_naming(info, path, "refused")


def _zip_bytes(tmp_path):
    path = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("name,content,reason", [
    ("empty.pt", b"", "empty"),
    ("empty.safetensors", b"", "empty"),
    ("notes.pt", b"these are not weights\njust text\n", "text file"),
    ("lfs.ckpt", b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1234\n", "git lfs pull"),
    ("page.safetensors", b"<html><body>404</body></html>\n", "text file"),
    ("truncated.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\": {\"dt", "cannot read as safetensors"),
    ("random.pt", bytes(range(256)) * 4, "cannot read as a PyTorch checkpoint"),
])
def test_unreadable_files_give_one_line_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    _one_line_naming(info, path, reason)


def test_truncated_checkpoint_gives_one_line(tmp_path):
    data = _zip_bytes(tmp_path)
    for keep in (len(data) // 2, 100):
        path = tmp_path / f"cut{keep}.pt"
        path.write_bytes(data[:keep])
        with pytest.raises(UserError) as info:
            read_checkpoint(path)
        _one_line_naming(info, path, "cannot read as a PyTorch checkpoint")


def test_missing_file_and_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(UserError) as info:
        read_checkpoint(folder)
    _one_line_naming(info, folder, "config.json")
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError) as info:
        read_checkpoint(folder)
    _one_line_naming(info, folder / "config.json", "JSON")


def test_good_files_and_hf_folders_are_read(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.pt"
    torch.save({"model": {"w": torch.ones(2)}}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.hf_config is None and ckpt.source == str(path)
    assert torch.equal(ckpt.payload["model"]["w"], torch.ones(2))
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({"neck.w": torch.ones(3)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "zoedepth"}')
    for p in (folder, folder / "model.safetensors"):  # the folder, or its weights file by name
        ckpt = read_checkpoint(p)
        assert ckpt.hf_config == {"model_type": "zoedepth"} and set(ckpt.payload) == {"neck.w"}
