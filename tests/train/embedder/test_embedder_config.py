"""EmbedderConfig: defaults, round trip, and errors that name the field and the allowed values."""

from __future__ import annotations

import pytest

from train.embedder import DEFAULT_LORA_TARGETS, EmbedderConfig, LoraSettings


def test_defaults_and_round_trip():
    config = EmbedderConfig()
    assert (config.base, config.pooling, config.attention, config.max_length) == ("smollm2", "mean",
                                                                                  "bidirectional", 96)
    assert config.template == "{text}" and config.normalize is False and config.gradient_checkpointing is False
    assert config.lora == LoraSettings(enabled=False, r=16, alpha=32, dropout=0.05,
                                       target_modules=list(DEFAULT_LORA_TARGETS))
    custom = EmbedderConfig(pooling="eos", template="Movie: {text}", lora={"enabled": True, "r": 8})
    assert isinstance(custom.lora, LoraSettings) and custom.lora.r == 8
    assert EmbedderConfig.from_dict(custom.to_dict()) == custom
    assert custom.format("Fargo") == "Movie: Fargo"


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="EmbedderConfig.pool_method"):
        EmbedderConfig.from_dict({"pool_method": "mean"})
    with pytest.raises(ValueError, match="lora.rank"):
        EmbedderConfig.from_dict({"lora": {"rank": 8}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pooling": "max"}, r"EmbedderConfig.pooling must be one of \('mean', 'last', 'eos'\), got 'max'"),
        ({"attention": "full"}, r"EmbedderConfig.attention must be one of \('bidirectional', 'causal'\)"),
        ({"max_length": 1}, "EmbedderConfig.max_length must be an int >= 2"),
        ({"template": "no field"}, "EmbedderConfig.template must be a format string with exactly the field"),
        ({"template": "{text} {year}"}, "EmbedderConfig.template"),
        ({"template": "{text"}, "EmbedderConfig.template"),
        ({"base": ""}, "EmbedderConfig.base"),
        ({"normalize": "yes"}, "EmbedderConfig.normalize must be a bool"),
        ({"lora": {"r": 0}}, "EmbedderConfig.lora.r must be an int > 0"),
        ({"lora": {"dropout": 1.0}}, r"EmbedderConfig.lora.dropout must be in \[0, 1\)"),
        ({"lora": {"target_modules": []}}, "EmbedderConfig.lora.target_modules must be a non-empty list"),
    ],
)
def test_validation_names_field_and_rule(fields, message):
    with pytest.raises(ValueError, match=message):
        EmbedderConfig(**fields)
