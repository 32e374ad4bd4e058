"""Config: dotted keys, type checks, YAML loading, clear errors."""

import pytest

from nas.config import Config, all_keys, apply_dict, load_yaml, parse_assignment, validate
from nas.errors import NasError
from tests.conftest import assert_refused


def test_defaults_are_the_darts_paper_settings() -> None:
    config = Config()
    assert (config.strategy.weight_lr, config.strategy.weight_lr_min) == (0.025, 0.001)
    assert (config.strategy.weight_momentum, config.strategy.weight_decay) == (0.9, 3e-4)
    assert config.strategy.grad_clip == 5.0
    assert config.strategy.alpha_lr == 3e-4 and config.strategy.alpha_betas == [0.5, 0.999]
    assert config.strategy.alpha_weight_decay == 1e-3
    assert (config.data.batch_size, config.data.train_portion) == (64, 0.5)
    assert (config.run.epochs, config.model.layers, config.model.channels) == (50, 8, 16)


def test_set_converts_and_checks_types() -> None:
    config = Config()
    config.set(*parse_assignment("strategy.weight_lr=1e-3"))  # YAML 1.1 reads this as a string
    assert config.strategy.weight_lr == 0.001
    config.set(*parse_assignment("strategy.alpha_betas=[0.9, 0.99]"))
    assert config.strategy.alpha_betas == [0.9, 0.99]
    config.set("data.name", "cifar10")
    config.set(*parse_assignment("data.data_dir=/tmp/x"))
    assert config.to_dict()["data"]["data_dir"] == "/tmp/x"
    config.set("data.data_dir", None)
    assert config.to_dict()["data"]["data_dir"] is None
    with pytest.raises(NasError, match="config key 'model.layers': expected int, got 'many'"):
        config.set(*parse_assignment("model.layers=many"))
    with pytest.raises(NasError, match="expected int, got 2.5"):
        config.set("model.layers", 2.5)
    with pytest.raises(NasError, match="expected bool"):
        config.set("data.augment", "yes please")


def test_unknown_keys_suggest_the_closest() -> None:
    with pytest.raises(
        NasError, match="unknown config key 'strategy.weight_rl'; did you mean 'strategy.weight_lr'"
    ):
        Config().set("strategy.weight_rl", 1.0)
    with pytest.raises(NasError, match="did you mean 'strategy.temperature'"):
        Config().set("strategy.temperatur", 1.0)  # a strategy's option, misspelt
    with pytest.raises(NasError, match="unknown config key 'nothing'"):
        Config().set("nothing", 1)
    with pytest.raises(NasError, match="--set expects key=value"):
        parse_assignment("strategy.weight_lr")


def test_yaml_file_applies_sections(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  layers: 5\nstrategy:\n  alpha_lr: 6.0e-4\nmeta:\n  note: ignored\n")
    config = Config()
    apply_dict(config, load_yaml(path), str(path))
    assert config.model.layers == 5 and config.strategy.alpha_lr == 6e-4
    path.write_text("model:\n  layerz: 5\n")
    with pytest.raises(NasError, match=r"c\.yaml: unknown config key 'model.layerz'"):
        apply_dict(Config(), load_yaml(path), str(path))
    path.write_text("model: [1, 2\n")
    with pytest.raises(NasError, match="not valid YAML"):
        load_yaml(path)
    with pytest.raises(NasError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_validate_rejects_out_of_range_values() -> None:
    config = Config()
    config.set("strategy.order", 3)
    with pytest.raises(NasError, match="strategy.order must be 1 or 2"):
        validate(config)


def test_every_key_is_settable_from_its_own_default() -> None:
    config = Config()
    defaults = config.to_dict()
    for key in all_keys():
        section, name = key.split(".")
        if name in defaults[section]:  # the other strategies' options are refused with darts
            config.set(key, defaults[section][name])
    validate(config)


def test_train_config_defaults_are_the_papers_and_resolve_by_network() -> None:
    from nas.config import TrainConfig

    config = TrainConfig()
    validate(config)
    config.resolve(fit_data=False)  # what the data leaves unset: the paper's CIFAR-10 values
    assert (config.run.epochs, config.data.batch_size, config.data.cutout) == (600, 96, 16)
    assert (config.model.layers, config.model.channels) == (20, 36)
    assert (config.train.lr, config.train.lr_min, config.train.weight_decay) == (0.025, 0.0, 3e-4)
    assert (config.model.auxiliary_weight, config.model.drop_path) == (0.4, 0.2)
    imagenet = TrainConfig()
    imagenet.set("model.network", "imagenet")
    imagenet.resolve(fit_data=False)
    assert (imagenet.model.layers, imagenet.model.channels) == (14, 48)
    defaults = config.to_dict()
    for key in all_keys(TrainConfig):
        section, name = key.split(".")
        if name in defaults[section]:
            config.set(key, defaults[section][name])
    with pytest.raises(NasError, match="did you mean 'train.momentum'"):
        config.set("train.momentun", 0.5)
    config.train.lr_min = 1.0
    with pytest.raises(NasError, match="train.lr_min"):
        validate(config)


# A setting that the chosen plugin or command does not read, set on the command line or in a
# --config file: refused in one line that names the key (a default is never refused).
NO_EFFECT_CASES = {
    "asap_option_with_darts": ("search --set strategy.temperature=1.0", "strategy.temperature"),
    "asap_option_at_its_default": ("search --set strategy.temperature=1.6", "strategy.temperature"),
    "asap_option_in_yaml": ("search --config asap.yaml", "strategy.grace_temperature"),
    "synthetic_option_with_digits": (
        "search --set data.synthetic_samples=64",
        "data.synthetic_samples",
    ),
    "data_dir_with_synthetic": ("search --dataset synthetic --data-dir d", "data.data_dir"),
    "data_file_with_digits": ("grow --data-file t.csv", "data.data_file"),
    "target_with_digits": ("grow --target label", "data.target"),
    "train_portion_in_train": (
        "train --genotype DARTS_V2 --set data.train_portion=0.7",
        "data.train_portion",
    ),
    "mlp_option_with_cnn": ("grow --generator cnn --set adanet.widths=[8]", "adanet.widths"),
    "cnn_option_with_mlp": ("grow --set adanet.cnn_channels=4", "adanet.cnn_channels"),
    "augment_in_grow": ("grow --set data.augment=true", "data.augment"),
    "cutout_in_grow": ("grow --set data.cutout=4", "data.cutout"),
}


@pytest.mark.parametrize("argv,key", NO_EFFECT_CASES.values(), ids=NO_EFFECT_CASES.keys())
def test_a_setting_that_would_do_nothing_is_refused(tmp_path, argv: str, key: str) -> None:
    (tmp_path / "asap.yaml").write_text("strategy:\n  grace_temperature: 0.5\n")
    # --epochs 0 is refused too, after: a setting let through fails fast, on another message.
    args = [*argv.split(), "--epochs", "0", "--out", "run"]
    line = assert_refused(*args, cwd=tmp_path, contains=f"{key} does nothing here")
    assert line.endswith("remove it") or "remove it, or set" in line
