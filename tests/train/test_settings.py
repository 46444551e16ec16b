"""docs/settings.md: every paper profile equals the authors' value, and the page is the code's own output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from train.settings import DOWNSTREAM, SETTINGS, PaperSetting, profile_values, render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _equal(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12)
    return a == b


@pytest.mark.parametrize("setting", [s for s in SETTINGS + DOWNSTREAM if s.field],
                         ids=lambda s: f"{s.stage}.{s.field}")
def test_the_paper_profile_is_the_paper(setting):
    assert _equal(profile_values(setting)[0], setting.paper), setting


def test_a_paper_profile_that_drifts_is_caught():
    drifted = PaperSetting("LLM2Rec", "csft", "lr", 1e-3, "x")
    assert not _equal(profile_values(drifted)[0], drifted.paper)
    downstream = DOWNSTREAM[0]
    assert profile_values(downstream)[0] == downstream.paper


def test_every_behaviour_row_names_its_check_or_reason():
    assert all(s.note for s in SETTINGS + DOWNSTREAM if s.field is None)


def test_the_committed_page_is_generated():
    assert DOCS.read_text() == render(), "regenerate: python -m train settings > docs/settings.md"
