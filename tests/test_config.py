import json

import pytest

from dermalens.config import ConfigError, TrainConfig, config_from_dict, make_config


def test_defaults_then_file_then_overrides_then_kwargs(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"epochs": 5, "lr": 0.01, "model": "plain_cnn"}))
    cfg = make_config(file, ["lr=0.002", "classes=['mel','nv']"], model="tf_efficientnet_lite1")
    assert cfg.epochs == 5
    assert cfg.lr == 0.002
    assert cfg.classes == ("mel", "nv")
    assert cfg.model == "tf_efficientnet_lite1"
    assert cfg.batch_size == TrainConfig().batch_size


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"unknown setting 'epoch'; did you mean epochs\?"):
        make_config(overrides=["epoch=3"])


def test_unknown_key_in_file_is_rejected(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        make_config(file)


def test_wrong_type_names_key_and_example():
    with pytest.raises(ConfigError, match=r"lr='fast': expected float, e.g. lr=0.001"):
        make_config(overrides=["lr=fast"])
    with pytest.raises(ConfigError, match=r"epochs=2.5: expected int"):
        make_config(overrides=["epochs=2.5"])


def test_choice_is_checked():
    with pytest.raises(ConfigError, match=r"balance='smote': must be one of"):
        make_config(overrides=["balance=smote"])


def test_values_are_parsed_safely_never_evaluated():
    with pytest.raises(ConfigError, match="expected int"):
        make_config(overrides=["epochs=__import__('os').getcwd()"])


def test_missing_equals_sign():
    with pytest.raises(ConfigError, match="expected key=value, got 'epochs'"):
        make_config(overrides=["epochs"])


def test_bool_and_round_trip():
    cfg = make_config(overrides=["bf16=true", "augment=False"])
    assert cfg.bf16 is True and cfg.augment is False
    assert config_from_dict(cfg.to_dict()) == cfg


def test_saved_config_from_before_a_setting_existed_keeps_it_off():
    saved = make_config(ema=0.5).to_dict()
    del saved["ema"]  # a run saved before the weight average existed
    assert config_from_dict(saved).ema == 0.0
    assert config_from_dict(make_config(ema=0.5).to_dict()).ema == 0.5
