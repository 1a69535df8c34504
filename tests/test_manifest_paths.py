"""One path rule for a manifest (#27 item 7): `data validate` and training's readers refuse the same paths."""
import json
import os

import pytest

from swinunetr_lib.data.loading import DataError, refuse_paths_outside_root
from swinunetr_lib.data.manifest import resolve_entries
from swinunetr_lib.data.pretrain_volumes import load_image_list
from swinunetr_lib.data.validate import validate_manifest
from swinunetr_lib.pretrain.run import main as pretrain_main

PATH_CODES = {"bad_path", "absolute_path", "outside_root", "unreadable"}


def _layout(tmp_path):
    """data/ (the root) holding a.nii.gz and sub/b.nii.gz, a file outside it, and links in and out."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for p in (root / "a.nii.gz", root / "sub" / "b.nii.gz", tmp_path / "outside.nii.gz"):
        p.write_bytes(b"x")
    os.symlink(tmp_path / "outside.nii.gz", root / "link_out.nii.gz")
    os.symlink(root / "a.nii.gz", root / "sub" / "link_in.nii.gz")
    return root


# (case, image paths of the manifest (formatted with root= and tmp=), refused?)
CASES = [
    ("relative", ["a.nii.gz"], False),
    ("dot relative", ["./sub/b.nii.gz"], False),
    ("up and back down", ["sub/../a.nii.gz"], False),
    ("link inside the root", ["sub/link_in.nii.gz"], False),
    ("absolute outside (/etc/passwd)", ["/etc/passwd"], True),
    ("absolute inside the root", ["{root}/a.nii.gz"], True),
    ("home", ["~/a.nii.gz"], True),
    ("leaves the root", ["../outside.nii.gz"], True),
    ("leaves the root halfway", ["sub/../../outside.nii.gz"], True),
    ("link out of the root", ["link_out.nii.gz"], True),
    ("mixing relative and absolute", ["a.nii.gz", "{tmp}/outside.nii.gz"], True),
]


@pytest.mark.parametrize("case,images,refused", CASES, ids=[c[0] for c in CASES])
def test_validate_and_training_refuse_the_same_paths(tmp_path, case, images, refused):
    root = _layout(tmp_path)
    images = [i.format(root=root, tmp=tmp_path) for i in images]
    manifest = root / "m.json"
    manifest.write_text(json.dumps({"training": [{"image": i} for i in images]}))

    path_problems = [p for p in validate_manifest(manifest).problems if p.code in PATH_CODES]
    assert bool(path_problems) == refused, (case, path_problems)
    readers = (lambda: resolve_entries(manifest), lambda: refuse_paths_outside_root(manifest),
               lambda: load_image_list(manifest))
    for read in readers:
        if not refused:
            read()
            continue
        with pytest.raises(ValueError) as err:
            read()
        bad = path_problems[0]
        # one line naming the manifest, the entry, the path and the same problem `validate` names
        assert str(err.value).removeprefix("manifest ").startswith(f"{manifest}: {bad.entry} image {bad.path!r} ")
        assert bad.message.removeprefix("path ") in str(err.value) and "\n" not in str(err.value)


def test_pretrain_refuses_an_absolute_manifest_path_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWINUNETR_TRACEBACK", raising=False)
    manifest = _layout(tmp_path) / "m.json"
    manifest.write_text(json.dumps({"training": [{"image": "a.nii.gz"}, {"image": "/etc/passwd"}]}))
    code = pretrain_main(["--data-manifest", str(manifest), "--run-dir", str(tmp_path / "run"), "--roi-size", "32",
                          "--feature-size", "12", "--max-steps", "1", "--device", "cpu", "--progress", "false"])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"python -m swinunetr_lib.pretrain: error: {manifest}: training[1] image "
                                 f"'/etc/passwd' is absolute; manifest paths must be relative to the data root "
                                 f"{manifest.parent}\n"), err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*"))
    with pytest.raises(DataError):  # the same refusal from the reader itself
        refuse_paths_outside_root(manifest)
