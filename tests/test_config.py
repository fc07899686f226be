from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import PRESETS, RunConfig, load_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name):
    cfg = PRESETS[name]()
    again = RunConfig.model_validate(cfg.model_dump())
    assert again == cfg
    assert cfg.model.n_embd % cfg.model.n_head == 0
    assert cfg.train.warmup_steps < cfg.train.max_steps


def test_every_field_is_described():
    def walk(model_cls, prefix=""):
        for name, field in model_cls.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, RunConfig.__mro__[1]):
                yield from walk(ann, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", field.description

    missing = [name for name, desc in walk(RunConfig) if not desc]
    assert not missing, f"fields without a description: {missing}"


def test_toml_then_overrides(tmp_path: Path):
    f = tmp_path / "run.toml"
    f.write_text('preset = "small"\n[train]\nmax_steps = 7\nlr = 0.01\n[filter.quality]\nprofile = "poetry"\n')
    cfg = load_config(path=f, overrides=["train.max_steps=9", "evaluate.prompts=[\"Hi\"]", "model.pos_encoding=learned"])
    assert cfg.preset == "small" and cfg.model.n_layer == 4
    assert cfg.train.max_steps == 9 and cfg.train.lr == 0.01
    assert cfg.filter.quality.profile == "poetry"
    assert cfg.evaluate.prompts == ["Hi"] and cfg.model.pos_encoding == "learned"


def test_bad_overrides_are_clear():
    with pytest.raises(ValidationError, match="max_stepz"):
        load_config("tiny", overrides=["train.max_stepz=3"])
    with pytest.raises(ValidationError):
        load_config("tiny", overrides=["train.max_steps=-1"])
    with pytest.raises(ValueError, match="not of the form"):
        load_config("tiny", overrides=["train.max_steps"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")


def test_shipped_example_config_loads():
    cfg = load_config(path=Path(__file__).resolve().parent.parent / "configs" / "example.toml")
    assert cfg.preset == "tiny" and cfg.register.model_name == "quill"
