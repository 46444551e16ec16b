"""Stage configs: profiles are recipes, budgets change only step counts, batch and LoRA; the LR schedule."""

from __future__ import annotations

import pytest

from train.stages.config import BUDGET_KEYS, BUDGET_NAMES, PROFILE_NAMES
from train.stages.loop import linear_schedule
from train.stages.pipeline import STAGES


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_every_profile_and_budget_and_budgets_keep_the_recipe(stage):
    config_cls = STAGES[stage][1]
    assert tuple(config_cls.PROFILES) == PROFILE_NAMES and tuple(config_cls.BUDGETS) == BUDGET_NAMES
    assert config_cls.PROFILES["paper"] == {} and config_cls.BUDGETS["full"] == {}
    for budget, values in config_cls.BUDGETS.items():
        assert set(values) <= BUDGET_KEYS, (stage, budget, set(values) - BUDGET_KEYS)
        for profile in PROFILE_NAMES:
            config_cls.profile(profile, budget)  # valid


def test_a_budget_key_outside_the_list_is_caught():
    from dataclasses import dataclass
    from typing import Any, ClassVar

    from train.stages.config import StageConfig

    with pytest.raises(TypeError, match=r"Leaky.BUDGETS\['cpu-small'\] changes \['lr'\]"):
        @dataclass
        class Leaky(StageConfig):
            BUDGETS: ClassVar[dict[str, dict[str, Any]]] = {"full": {}, "cpu-small": {"lr": 1.0}, "demo": {}}


def test_schedule_spans_steps_or_epochs():
    from train.stages import ContrastiveConfig, CSFTConfig, MNTPConfig

    assert CSFTConfig().schedule(90_000) == (10_000, 10_000)  # max_steps
    # MNTP: 3 epochs of 1,514 titles at batch 32 = 3 x 47 steps, fewer than the 1,000-step stop
    assert MNTPConfig().schedule(1514) == (141, 141)
    assert MNTPConfig().schedule(100_000) == (9375, 1000)  # stopped at 1,000 steps, schedule over 3 epochs
    assert ContrastiveConfig().schedule(1682) == (30, 30)  # 5 epochs of 6 batches of 256
    with pytest.raises(ValueError, match="steps must be > 0 when epochs is 0"):
        CSFTConfig(steps=0)


def test_linear_schedule_matches_transformers():
    import torch
    from transformers import get_linear_schedule_with_warmup

    for total, warmup in ((10, 0), (10, 3), (7, 7)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        hf = get_linear_schedule_with_warmup(opt, warmup, total)
        ours = linear_schedule(total, warmup)
        for s in range(total):
            assert abs(hf.get_last_lr()[0] - ours(s)) < 1e-9, (total, warmup, s)
            opt.step()
            hf.step()
