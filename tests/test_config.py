"""Config loading and validation: bad input fails before any work and says what to do."""

import dataclasses

import pytest
from conftest import run_cli

from tfvision.config import PACKAGED_CONFIGS, DistributeConfig, TrainConfig, load_config
from tfvision.errors import ConfigError


def test_every_shipped_config_loads():
    for path in PACKAGED_CONFIGS.glob("*.yaml"):
        assert load_config(path).name == path.stem


def test_override_is_parsed_as_yaml():
    cfg = load_config("quickstart", ["data.image_size=[24, 16]", "train.epochs=2"])
    assert cfg.image_hw == (24, 16)
    assert cfg.train.epochs == 2


def test_exponent_notation_is_a_float_in_overrides_and_files(tmp_path):
    # PyYAML alone reads 1e-4 as the string "1e-4", which would fail validation.
    cfg = load_config("quickstart", ["train.learning_rate=1e-4", "train.step_gamma=2E+1"])
    assert (cfg.train.learning_rate, cfg.train.step_gamma) == (1e-4, 20.0)
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  weight_decay: 5e-4\n")
    assert load_config(path).train.weight_decay == 5e-4


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", ["train.lerning_rate=0.1"])
    message = str(err.value)
    assert "train.lerning_rate" in message
    assert "did you mean 'learning_rate'" in message
    assert "epochs" in message  # the valid keys are listed


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match="unknown config section 'trian'.*'train'"):
        load_config("quickstart", ["trian.epochs=1"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"train.epochs must be int >= 1, got 'ten'"):
        load_config("quickstart", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match="data.batch_size must be int >= 1, got 0"):
        load_config("quickstart", ["data.batch_size=0"])


def test_bad_choice_lists_choices():
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", ["train.optimizer=adm"])
    assert "did you mean 'adam'" in str(err.value)
    assert "must be sgd, momentum, adam or adamw, got 'adm'" in str(err.value)


# Each of these passed load once and failed late (inside fit, after config.yaml was written),
# silently changed meaning, or crashed with a raw Python error.
@pytest.mark.parametrize("override, message", [
    ("train.backup_freq=epochs",
     r"train.backup_freq must be epoch or int >= 1, got 'epochs'; did you mean 'epoch'\?"),
    ("train.backup_freq=0", r"train.backup_freq must be epoch or int >= 1, got 0"),
    ("train.backup_freq=true", r"train.backup_freq must be epoch or int >= 1, got True"),
    ("data.validation_fraction=1.5",
     r"data.validation_fraction must be float >= 0.0 and < 1.0, got 1.5"),
    ("data.image_size=[24]",
     r"data.image_size must be int >= 1 or a list of 2 ints >= 1, got \[24\]"),
    ("data.image_size=[1, 2, 3]", r"data.image_size must be .*, got \[1, 2, 3\]"),
    ("data.image_size=[0, 8]", r"data.image_size must be .*, got \[0, 8\]"),
    ("data.validation_fraction=0",
     r"data.validation_fraction=0 leaves data.source=digits no validation examples"),
    ("data.autotune=sometimes", r"data.autotune must be auto, true or false, got 'sometimes'"),
    ("distribute.jit_compile=always", r"distribute.jit_compile must be auto, true or false"),
    ("distribute.steps_per_execution=0",
     r"distribute.steps_per_execution must be auto or int >= 1, got 0"),
    ("data.randaugment_magnitude=11",
     r"data.randaugment_magnitude must be int >= 0 and <= 10, got 11"),
    ("train.unfreeze_from=0", r"train.unfreeze_from must be string or int >= 1, got 0"),
    ("train.momentum=1.5", r"train.momentum must be float >= 0.0 and <= 1.0, got 1.5"),
    ("model.dropout=1", r"model.dropout must be float >= 0.0 and < 1.0, got 1"),
    ("model.filters=[32, 0]", r"model.filters must be a list of ints >= 1"),
])
def test_bad_value_fails_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_config("quickstart", [override])


def test_no_validation_data_fails_at_load_unless_another_key_gives_it():
    with pytest.raises(ConfigError, match="data.source=folder no validation examples; set it "
                                          "above 0, or give data.validation_path"):
        load_config("quickstart", ["data.source=folder", "data.validation_fraction=0"])
    for source, key in (("folder", "validation_path"), ("tfds", "validation_split")):
        cfg = load_config("quickstart", [f"data.source={source}", "data.validation_fraction=0",
                                         f"data.{key}=val"])
        assert cfg.data.validation_fraction == 0


def test_digits_hold_out_exactly_validation_fraction():
    from tfvision.data.digits import load_digits

    default = load_digits(load_config("quickstart").data, seed=0)
    assert (default.train.size, default.validation.size) == (1438, 359)  # the README's split
    tenth = load_digits(load_config("quickstart", ["data.validation_fraction=0.1"]).data, seed=0)
    assert (tenth.train.size, tenth.validation.size) == (1617, 180)


def test_sections_made_in_python_are_checked_too():
    """Not only load_config: the API and dataclasses.replace check every value as well."""
    with pytest.raises(ConfigError, match="distribute.jit_compile must be auto, true or false"):
        DistributeConfig(jit_compile="yes")
    with pytest.raises(ConfigError, match="train.backup_freq must be epoch or int >= 1"):
        dataclasses.replace(TrainConfig(), backup_freq=-5)
    # An int given for a float key becomes a float: Keras' SGD refuses momentum=1 (an int).
    assert type(load_config("quickstart", ["train.momentum=1"]).train.momentum) is float


def test_bad_value_on_the_command_line_exits_2_before_any_run_dir(tmp_path):
    result = run_cli("train", "--set", "train.backup_freq=epochs", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "train.backup_freq" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_config_file_lists_shipped_configs(tmp_path):
    with pytest.raises(ConfigError, match="not found.*quickstart"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_reloads_equal(tmp_path):
    cfg = load_config("quickstart", ["train.epochs=3"])
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_every_config_key_is_documented_in_the_readme():
    import dataclasses

    from conftest import REPO

    from tfvision.config import SECTIONS

    readme = (REPO / "README.md").read_text()
    missing = [f"{section}.{f.name}" for section, cls in SECTIONS.items()
               for f in dataclasses.fields(cls) if f"{section}.{f.name}" not in readme]
    assert not missing, f"README.md does not document {missing}"
