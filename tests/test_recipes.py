"""Every shipped recipe parses (no model is loaded), and bad recipes fail with one line naming the key/file."""

import pytest

from alignkit.errors import AlignkitError
from alignkit.hardware import Hardware
from alignkit.recipe import list_recipes, load_recipe, parse_overrides, parse_recipe_dict

CPU = Hardware(device="cpu", cpu_count=2, cpu_bf16=False)
GPU = Hardware(device="cuda", cpu_count=8, cpu_bf16=False, cuda_bf16=True, gpu_name="A100")


def test_recipes_exist():
    names = set(list_recipes())
    assert {"sft-smol", "dpo-smol", "sft-qwen", "dpo-qwen"} <= names


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_recipe_parses(name):
    recipe = load_recipe(name, hardware=CPU)
    assert recipe.args.trainer in {"sft", "reward", "dpo", "grpo", "ppo", "kto", "cpo"}
    assert recipe.args.description, f"{name}: a one-line description is required for `alignkit list`"
    text = recipe.path.read_text()
    assert text.startswith("#") and "make recipe=" in text or "make " in text.splitlines()[1]
    # hardware choices land in the parsed config unless the recipe set them
    if "bf16" not in recipe.raw:
        assert recipe.training_args.bf16 is False
        assert recipe.training_args.use_cpu is True
    if "gradient_checkpointing" not in recipe.raw:
        assert recipe.training_args.gradient_checkpointing is False


def test_smol_recipes_use_embedded_model_and_cards():
    for name in list_recipes():
        if name.endswith("-smol") or "-smol-" in name:
            recipe = load_recipe(name, hardware=CPU)
            model = recipe.model_args.model_name_or_path
            if model.startswith("run:"):  # a start run must itself be a smol recipe (which starts from the embedded)
                assert model.removeprefix("run:") in list_recipes() and "-smol" in model, name
            else:
                assert model == "smollm2-135m-instruct", name


def test_qwen_recipes_are_qlora_and_take_dtype_from_hardware():
    # (bf16 on a GPU cannot be parsed on this CPU machine: TrainingArguments checks the real device; the GPU
    # choice itself is covered in test_hardware.py)
    recipe = load_recipe("dpo-qwen", hardware=CPU)
    assert recipe.model_args.load_in_4bit and recipe.model_args.bnb_4bit_quant_type == "nf4"
    assert recipe.model_args.use_bnb_nested_quant and recipe.model_args.use_peft
    assert recipe.model_args.dtype == "float32"  # QLoRA compute dtype follows the chosen precision


def test_explicit_precision_wins_over_hardware():
    recipe = load_recipe("dpo-smol", ["bf16=true"], hardware=CPU)
    assert recipe.training_args.bf16 is True
    assert "bf16" not in recipe.hardware_choices


def test_overrides_are_typed():
    assert parse_overrides(["lr=1e-4", "n=3", "flag=true", "mods=[q_proj, v_proj]"]) == {
        "lr": "1e-4",
        "n": 3,
        "flag": True,
        "mods": ["q_proj", "v_proj"],
    }
    recipe = load_recipe("dpo-smol", ["learning_rate=1e-4", "max_steps=3"], hardware=CPU)
    assert recipe.training_args.learning_rate == pytest.approx(1e-4)
    assert recipe.training_args.max_steps == 3


def test_yaml_no_is_trl_no_not_false(tmp_path):
    # YAML 1.1 reads `no` as False, and TRL rejects False for its "no" strategy; recipes read YAML 1.2 booleans.
    assert parse_overrides(["save_strategy=no", "on=on", "flag=True"]) == {
        "save_strategy": "no",
        "on": "on",
        "flag": True,
    }
    recipe = load_recipe("dpo-smol", ["save_strategy=no", "gradient_checkpointing=no"], hardware=CPU)
    assert recipe.training_args.save_strategy == "no"
    assert recipe.training_args.gradient_checkpointing is False  # a boolean field: TRL's parser reads "no" as False
    path = tmp_path / "mine.yaml"
    path.write_text("trainer: dpo\ndataset: sharegpt-pairs-smol\neval_strategy: no\n")
    assert load_recipe(str(path), hardware=CPU).training_args.eval_strategy == "no"


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"trainer": "dpo", "dataset": "x", "lerning_rate": 1e-4}, "'lerning_rate'"),
        ({"trainer": "dop", "dataset": "x"}, "field 'trainer'"),
        ({"trainer": "dpo"}, "dataset"),
        ({"trainer": "dpo", "dataset": "x", "learning_rate": "abc"}, "field learning_rate"),
        ({"trainer": "grpo", "dataset": "x"}, "reward_funcs"),
        ({"trainer": "dpo", "dataset": "x", "max_train_samples": 0}, "max_train_samples"),
        (
            {
                "trainer": "grpo",
                "dataset": "x",
                "reward_funcs": ["math_answer", "length_penalty"],
                "length_penalty_coef": 0.1,
                "length_penalty_target": 8,
            },
            "field 'length_penalty_coef' and reward_funcs entry 'length_penalty'",
        ),
    ],
)
def test_bad_recipes_fail_with_one_line(raw, needle):
    with pytest.raises(AlignkitError) as err:
        parse_recipe_dict(raw, "bad.yaml", hardware=CPU)
    message = str(err.value)
    assert needle in message and "bad.yaml" in message
    assert "\n" not in message


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("trainer: dpo\ndataset: [unclosed\n")
    with pytest.raises(AlignkitError, match=r"broken.yaml:\d+: invalid YAML"):
        load_recipe(str(path), hardware=CPU)


def test_unknown_recipe_lists_available():
    with pytest.raises(AlignkitError, match="dpo-smol"):
        load_recipe("no-such-recipe", hardware=CPU)
