"""The output-folder guard every tool uses before it writes or replaces --out."""

from __future__ import annotations

import pytest

from llmrec.files import ForeignFolder, refuse_foreign_folder


def test_a_folder_is_written_only_when_new_empty_ours_or_forced(tmp_path):
    refuse_foreign_folder(tmp_path / "new", ("export.json",))  # does not exist
    (tmp_path / "empty").mkdir()
    refuse_foreign_folder(tmp_path / "empty", ("export.json",))
    ours = tmp_path / "ours"
    (ours / "seed-1").mkdir(parents=True)
    refuse_foreign_folder(ours, ("summary.json", "seed-*"))  # a glob marker
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(ForeignFolder, match=r"--out .*home is a non-empty folder .*'export.json'.*--force"):
        refuse_foreign_folder(foreign, ("export.json",))
    with pytest.raises(ForeignFolder, match="--index"):
        refuse_foreign_folder(foreign, ("manifest.json",), flag="--index")
    refuse_foreign_folder(foreign, ("export.json",), force=True)
    with pytest.raises(ForeignFolder, match="not a folder"):
        refuse_foreign_folder(foreign / "thesis.tex", ("export.json",), force=True)
    assert (foreign / "thesis.tex").read_text() == "years of work"
