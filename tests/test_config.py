import pytest

from reasonrl.config import ConfigError, load_config


def test_defaults_validate_and_fill_recipe_params():
    cfg = load_config(None, [])
    assert cfg.algorithm["name"] == "grpo"
    assert cfg.algorithm["clip_high"] == 0.28 and cfg.algorithm["clip_low"] == 0.2


def test_overrides_parse_yaml_scalars(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("trainer:\n  steps: 5\noptim:\n  lr: 1.0e-4\n")
    cfg = load_config(p, ["optim.lr=3e-5", "rollout.stop=['###']", "algorithm.norm_by_std=false"])
    assert cfg.trainer.steps == 5 and cfg.optim.lr == 3e-5
    assert cfg.rollout.stop == ["###"] and cfg.algorithm["norm_by_std"] is False


@pytest.mark.parametrize("override,needle", [
    ("trainer.stepz=3", "trainer.stepz: unknown field"),
    ("optim.lr=-1", "optim.lr"),
    ("rollout.top_p=2", "rollout.top_p"),
    ("algorithm.name=nope", "valid names"),
    ("algorithm.clip_hgh=0.3", "algorithm.clip_hgh: unknown parameter"),
    ("trainer.prompts_per_step=10", "not divisible"),
    ("trainerSteps", "section.field=value"),
])
def test_bad_config_names_the_field(override, needle):
    extra = ["trainer.mini_batch_prompts=4"] if "prompts_per_step" in override else []
    with pytest.raises(ConfigError) as e:
        load_config(None, [override, *extra])
    assert needle in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("override,needle", [
    ("optim.lr=.inf", "optim.lr is inf"),
    ("optim.lr=.nan", "optim.lr is nan"),
    ("reward.format=-.inf", "reward.format is -inf"),
    ("algorithm.clip_high=.inf", "algorithm.clip_high is inf"),
    ("trainer.steps=true", "trainer.steps: expected a number, not a boolean"),
    ("rollout.temperature=false", "rollout.temperature: expected a number, not a boolean"),
    ("optim.betas=[true, 0.99]", "optim.betas: expected a number, not a boolean"),
    ("reward.functions=[mod:fn=abc]", "weight 'abc' is not a number"),
    ("reward.functions=[mod:fn=inf]", "must be a finite number"),
    ("reward.functions=[justaname]", "'pkg.module:function"),
    ("data.train=/nonexistent/tasks.jsonl", "data.train: no such file"),
    ("data.train=builtin:arithh", "unknown built-in source"),
])
def test_bad_values_are_rejected_by_field(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_booleans_still_work_where_a_boolean_is_meant():
    cfg = load_config(None, ["trainer.resume=true", "eval.sampled=false", "trainer.overwrite=true"])
    assert cfg.trainer.resume is True and cfg.eval.sampled is False and cfg.trainer.overwrite is True
    assert load_config(None, ["reward.functions=[m.od:fn=0.5, m:g]"]).reward.functions == ["m.od:fn=0.5", "m:g"]


def test_model_level_error_names_the_field_not_the_whole_config():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["trainer.prompts_per_step=10", "trainer.mini_batch_prompts=4"])
    msg = str(e.value)
    assert "trainer.prompts_per_step=10" in msg
    assert "'run':" not in msg and "{" not in msg and len(msg) < 400
    with pytest.raises(ConfigError) as e:
        load_config(None, ["rollout.decode_graph=compile"])
    assert "rollout.decode_graph" in str(e.value) and "'temperature'" not in str(e.value)
