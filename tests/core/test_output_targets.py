"""Tests for terraseg.core.output_targets: one check of output paths before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from terraseg.core.output_targets import check_output_dir, check_output_targets
from terraseg.protocol.errors import OutputError, TerraSegError


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_check_output_dir_creates_missing(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "c"
    check_output_dir(out, ["classes.tif"], overwrite=False)
    assert out.is_dir()
    assert listing(out) == []  # the write test leaves nothing behind


def test_check_output_dir_refuses_existing(tmp_path: Path) -> None:
    (tmp_path / "classes.tif").write_bytes(b"keep me")
    (tmp_path / "probability.tif").write_bytes(b"keep me too")
    with pytest.raises(OutputError) as info:
        check_output_dir(tmp_path, ["probability.tif", "classes.tif", "preview.png"], False)
    err = info.value
    assert isinstance(err, TerraSegError) and isinstance(err, OSError)
    assert "classes.tif" in err.message and "probability.tif" in err.message
    assert "preview.png" not in err.message
    assert "--overwrite" in err.hint
    assert (tmp_path / "classes.tif").read_bytes() == b"keep me"
    check_output_dir(tmp_path, ["probability.tif", "classes.tif", "preview.png"], True)
    assert (tmp_path / "classes.tif").read_bytes() == b"keep me"


def test_check_output_dir_refuses_uncreatable_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("I am a file")
    with pytest.raises(OutputError) as info:
        check_output_dir(tmp_path / "afile" / "sub", ["classes.tif"], False)
    assert "afile" in info.value.message and info.value.hint
    with pytest.raises(OutputError, match="not a directory"):
        check_output_dir(tmp_path / "afile", ["classes.tif"], False)


def test_check_output_dir_refuses_directory_target(tmp_path: Path) -> None:
    (tmp_path / "classes.tif").mkdir()
    with pytest.raises(OutputError, match="directories"):
        check_output_dir(tmp_path, ["classes.tif"], True)


def _chmod_blocks_writes(path: Path) -> bool:
    try:
        (path / "probe").write_text("x")
    except PermissionError:
        return True
    (path / "probe").unlink()
    return False


def test_check_output_dir_refuses_read_only_dir(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        if not _chmod_blocks_writes(out):
            pytest.skip("permission bits do not block writes here (root)")
        with pytest.raises(OutputError, match="not writable"):
            check_output_dir(out, ["classes.tif"], False)
    finally:
        out.chmod(0o700)


def test_check_output_dir_tries_an_actual_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("terraseg.core.output_targets.tempfile.mkstemp", refuse)
    with pytest.raises(OutputError, match="not writable") as info:
        check_output_dir(tmp_path, ["classes.tif"], False)
    assert "--out-dir" in info.value.hint


# ------------------------------------------------------------------ check_output_targets


def test_check_output_targets_creates_the_folders(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m.tsm"
    table = tmp_path / "tables" / "areas.csv"
    check_output_targets([model, str(table)], overwrite=False)
    assert model.parent.is_dir() and table.parent.is_dir()
    assert listing(model.parent) == [] and listing(table.parent) == []


def test_check_output_targets_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "m.tsm").write_bytes(b"old model")
    with pytest.raises(OutputError) as info:
        check_output_targets([tmp_path / "m.tsm"], overwrite=False)
    err = info.value
    assert err.message == f"Output file '{tmp_path / 'm.tsm'}' already exists."
    assert err.hint == "Pass --overwrite to replace it, or choose another --out."
    check_output_targets([tmp_path / "m.tsm"], overwrite=True)
    assert (tmp_path / "m.tsm").read_bytes() == b"old model"


def test_check_output_targets_lists_every_existing_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "areas.csv").write_text("keep")
    (tmp_path / "b" / "zones.gpkg").write_text("keep")
    targets = [tmp_path / "a" / "areas.csv", tmp_path / "b" / "zones.gpkg"]
    with pytest.raises(OutputError) as info:
        check_output_targets(targets, False, "--out-csv or --out-zones")
    assert info.value.message == (
        f"Each of the output files '{targets[0]}', '{targets[1]}' already exists."
    )
    assert info.value.hint == (
        "Pass --overwrite to replace them, or choose another --out-csv or --out-zones."
    )


def test_check_output_dir_names_the_files_in_the_folder(tmp_path: Path) -> None:
    for name in ("compare.csv", "compare.md", "compare.json"):
        (tmp_path / name).write_text("old")
    with pytest.raises(OutputError, match="already exists") as info:
        check_output_dir(tmp_path, ("compare.csv", "compare.md", "compare.json"), False)
    assert info.value.message == (
        f"Each of the output files compare.csv, compare.md, compare.json in '{tmp_path}' "
        "already exists."
    )
    assert info.value.hint.endswith("choose another --out-dir.")


def test_check_output_targets_refuses_a_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("I am a file")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="not a directory") as info:
        check_output_targets([tmp_path / "afile" / "m.tsm"], overwrite=True)
    assert "afile" in info.value.message and "--out" in info.value.hint
    with pytest.raises(OutputError, match="cannot be created") as info:
        check_output_targets([tmp_path / "afile" / "sub" / "m.vrt"], overwrite=True)
    assert info.value.hint == "Choose an --out in a location you can write to."
    assert listing(tmp_path) == before


def test_check_output_targets_refuses_a_directory_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "m.tsm").mkdir()
    with pytest.raises(OutputError, match=r"m\.tsm in '.*' are directories"):
        check_output_targets([tmp_path / "m.tsm"], overwrite=True)


def test_check_output_targets_with_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    check_output_targets(["m.tsm"], overwrite=False)  # the folder is the working directory
    Path("m.tsm").write_text("x")
    with pytest.raises(OutputError, match="'m.tsm' already exists"):
        check_output_targets(["m.tsm"], overwrite=False)


def test_check_output_dir_rejects_names_with_folders(tmp_path: Path) -> None:
    for bad in ("sub/a.tif", "", "..", "."):
        with pytest.raises(ValueError, match="plain file name"):
            check_output_dir(tmp_path, [bad], False)
    check_output_dir(tmp_path / "new", [], False)
    assert (tmp_path / "new").is_dir()
