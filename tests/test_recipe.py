"""Recipe validation: every malformed recipe gets its own precise message
(``file: dotted.key: what is wrong``), overrides are typed, the CLI reports cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gancore import cli
from gancore.plugins import PluginHost
from gancore.recipe import RecipeError, load_recipe


pytestmark = pytest.mark.usefixtures("builtins_only")


def errors(path_or_data: Any, overrides: list[str] | None = None, registry: Any = None) -> list[str]:
    """The lines of the RecipeError the recipe raises (fails the test if it loads)."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path_or_data, overrides or [], registry=registry)
    lines = str(info.value).splitlines()
    assert lines == [info.value.source + ": " + (p.key + ": " if p.key else "") + p.message
                     for p in info.value.problems]
    return lines


def only(lines: list[str]) -> str:
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------------------
# structure


def test_unknown_top_level_key_suggests_the_close_one(basic_recipe, write_recipe):
    basic_recipe["trian"] = {"steps": 3}
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: trian: unknown key; did you mean 'train'?"


def test_unknown_key_in_train(basic_recipe, write_recipe):
    basic_recipe["train"]["stepz"] = 3
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: train.stepz: unknown key; did you mean 'steps'?"


def test_unknown_key_without_close_match_lists_the_keys(basic_recipe, write_recipe):
    basic_recipe["output"]["zzz"] = 1
    path = write_recipe(basic_recipe)
    line = only(errors(path))
    assert line.startswith(f"{path}: output.zzz: unknown key; expected one of: dir, sample_every,")


def test_wrong_type(basic_recipe, write_recipe):
    basic_recipe["train"]["steps"] = "many"
    path = write_recipe(basic_recipe)
    line = only(errors(path))
    assert line.startswith(f"{path}: train.steps: input should be a valid integer")
    assert line.endswith("(got 'many')")


def test_negative_steps(basic_recipe, write_recipe):
    basic_recipe["train"]["steps"] = -3
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: train.steps: input should be greater than or equal to 1 (got -3)"


def test_bad_precision(basic_recipe, write_recipe):
    basic_recipe["train"]["precision"] = "fp32"
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: train.precision: input should be 'no', 'fp16', 'bf16' or 'auto' (got 'fp32')"


def test_missing_schedule_and_several_problems_reported_together(basic_recipe, write_recipe):
    del basic_recipe["schedule"]
    basic_recipe["train"]["batch_size"] = 0
    path = write_recipe(basic_recipe)
    lines = errors(path)
    assert f"{path}: schedule: required key is missing" in lines
    assert f"{path}: train.batch_size: input should be greater than or equal to 1 (got 0)" in lines
    assert len(lines) == 2


def test_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[recipe]\nname = \n")
    line = only(errors(path))
    assert line.startswith(f"{path}: invalid TOML: ")
    assert "line 2" in line


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert only(errors(path)) == f"{path}: no such recipe file"


def test_a_folder_is_not_a_recipe(tmp_path):
    assert only(errors(tmp_path)) == f"{tmp_path}: not a file"


# ---------------------------------------------------------------------------------------
# parts, plugins, schedule roles


def test_unknown_part_suggests_close_names_and_owner(basic_recipe, write_recipe):
    basic_recipe["parts"]["G"]["use"] = "basic.generatr"
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: parts.G.use: unknown generator part 'basic.generatr'; "
                                  f"did you mean 'basic.generator' (plugin 'gancore')?")


def test_unknown_schedule(basic_recipe, write_recipe):
    basic_recipe["schedule"]["use"] = "alternatng"
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: schedule.use: unknown schedule part 'alternatng'; "
                                  f"did you mean 'alternating' (plugin 'gancore')?")


def test_part_of_the_wrong_kind(basic_recipe, write_recipe):
    basic_recipe["parts"]["G"] = {"use": "basic.discriminator", "width": 4}
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: parts.G.use: 'basic.discriminator' is a discriminator part "
                                  f"(from plugin 'gancore'), but a generator is needed here")


def test_unknown_key_in_a_parts_table(basic_recipe, write_recipe):
    basic_recipe["parts"]["D"]["widht"] = 8
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: parts.D.widht: unknown key; did you mean 'width'?"


def test_bad_value_in_a_parts_table(basic_recipe, write_recipe):
    basic_recipe["parts"]["D"]["width"] = 2
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: parts.D.width: input should be greater than or equal to 4 (got 2)"


def test_unknown_key_in_data_and_schedule_tables(basic_recipe, write_recipe):
    basic_recipe["data"]["resolutoin"] = 16
    basic_recipe["schedule"]["d_evry"] = 2
    path = write_recipe(basic_recipe)
    lines = errors(path)
    assert f"{path}: data.resolutoin: unknown key; did you mean 'resolution'?" in lines
    assert f"{path}: schedule.d_evry: unknown key; did you mean 'd_every' or 'g_every'?" in lines


def test_missing_role(basic_recipe, write_recipe):
    del basic_recipe["parts"]["D"]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: parts: schedule 'alternating' needs a discriminator in role 'D': "
                                  f"add a [parts.D] table with `use = ...`")


def test_extra_role(basic_recipe, write_recipe):
    basic_recipe["parts"]["E"] = {"use": "basic.generator"}
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: parts.E: schedule 'alternating' has no role 'E'; its roles are "
                                  f"G (generator), D (discriminator)")


def test_missing_required_plugin_gives_pip_hint(basic_recipe, write_recipe):
    basic_recipe["recipe"]["plugins"] = ["nonexistent"]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: recipe.plugins[0]: plugin 'nonexistent' is not installed; "
                                  f"pip install gancore-nonexistent")


def test_required_plugin_that_is_installed_but_not_loaded(basic_recipe, write_recipe):
    # the autouse fixture loads built-ins only (GANCORE_LOAD_PLUGINS=""); residual is installed
    pytest.importorskip("gancore_residual")
    basic_recipe["recipe"]["plugins"] = ["residual"]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: recipe.plugins[0]: plugin 'residual' is installed but skipped "
                                  f"(see GANCORE_LOAD_PLUGINS / --disable)")


def test_part_of_a_plugin_that_is_not_loaded_gives_pip_hint(basic_recipe, write_recipe):
    basic_recipe["parts"]["G"] = {"use": "residual.foo"}
    path = write_recipe(basic_recipe)
    registry = PluginHost(load_only=[]).registry
    assert only(errors(path, registry=registry)) == (
        f"{path}: parts.G.use: unknown generator part 'residual.foo'; no loaded plugin provides parts named "
        f"'residual.*'; by convention they come from the plugin 'residual': pip install gancore-residual (if it "
        f"is installed, see `gancore plugins` for why it is not loaded)")


def test_synthetic_source_without_its_plugin_gives_pip_hint(basic_recipe, write_recipe, builtin_registry):
    del basic_recipe["data"]  # the default source, synthfaces, comes from gancore-synth
    path = write_recipe(basic_recipe)
    assert only(errors(path, registry=builtin_registry)) == (
        f"{path}: data.source: unknown data part 'synthfaces'; 'synthfaces' comes from the plugin 'synth': "
        f"pip install gancore-synth (if it is installed, see `gancore plugins` for why it is not loaded)")


def test_part_under_an_unknown_prefix(basic_recipe, write_recipe, builtin_registry):
    basic_recipe["parts"]["G"] = {"use": "zork.gen"}
    path = write_recipe(basic_recipe)
    assert only(errors(path, registry=builtin_registry)) == (
        f"{path}: parts.G.use: unknown generator part 'zork.gen'; no loaded plugin provides parts named "
        f"'zork.*'; by convention they come from the plugin 'zork': pip install gancore-zork (if it is installed, "
        f"see `gancore plugins` for why it is not loaded)")


# ---------------------------------------------------------------------------------------
# labels, losses, optimizer, batching


def test_schedule_needs_a_label_the_data_lacks(basic_recipe, write_recipe):
    basic_recipe["schedule"]["condition"] = "age"
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: data.source: schedule 'alternating' needs label 'age', which data source "
                                  f"'blobs' does not provide (it provides: color, identity, square)")


def test_loss_reading_a_tensor_its_phase_lacks(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "tv"}]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: losses[0]: loss 'tv' reads 'image', which phase 'G' does not provide "
                                  f"(it provides: fake, g_fake); rename with inputs = {{...}} or pick another phase")


def test_loss_with_unknown_phase(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "tv", "phase": "Q", "inputs": {"image": "fake"}}]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: losses[0].phase: no phase 'Q'; phases: D, G"


def test_unknown_loss_and_bad_loss_key(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "tvv"}, {"use": "tv", "wieght": 2.0, "inputs": {"image": "fake"}}]
    path = write_recipe(basic_recipe)
    lines = errors(path)
    assert lines[0] == f"{path}: losses[0].use: unknown loss part 'tvv'; did you mean 'tv' (plugin 'gancore')?"
    assert lines[1] == f"{path}: losses[1].wieght: unknown key; did you mean 'weight'?"


def test_loss_renaming_an_input_it_does_not_read(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "tv", "inputs": {"img": "fake"}}]
    path = write_recipe(basic_recipe)
    line = only(errors(path))
    assert line.startswith(f"{path}: losses[0]: loss ")
    assert line.endswith(": inputs renames ['img'], but the term reads only ['image']")


def test_loss_input_error_names_the_registered_term(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "tv", "inputs": {"img": "fake"}}]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: losses[0]: loss 'tv': inputs renames ['img'], "
                                  f"but the term reads only ['image']")


def test_ambiguous_override_of_a_schedule_term(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "adversarial", "phase": "D", "weight": 2.0}]
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == (f"{path}: losses[0]: phase 'D' has several 'adversarial' terms (d_real, d_fake); "
                                  f"add `name = ...` to pick one, or a new name to add a term")


def test_grad_accum_must_divide_batch_size(basic_recipe, write_recipe):
    basic_recipe["train"]["grad_accum"] = 3
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: train.grad_accum: 3 does not divide the batch size of stream 'batch' (train.batch_size = 4)"


def test_per_part_for_an_untrained_role(basic_recipe, write_recipe):
    basic_recipe["optim"]["per_part"] = {"E": {"lr": 1e-3}}
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: optim.per_part.E: no trained role 'E'; trained roles: D, G"


def test_unknown_key_in_per_part_suggests_the_close_one(basic_recipe, write_recipe):
    basic_recipe["optim"]["per_part"] = {"G": {"lrr": 1e-3}}
    path = write_recipe(basic_recipe)
    assert only(errors(path)) == f"{path}: optim.per_part.G.lrr: unknown key; did you mean 'lr'?"


def test_overriding_a_schedule_term_to_read_a_missing_tensor(basic_recipe, write_recipe):
    basic_recipe["losses"] = [{"use": "adversarial", "name": "g_adv", "inputs": {"logits": "nowhere"}}]
    path = write_recipe(basic_recipe)
    assert only(errors(path)).startswith(f"{path}: losses[0]: loss 'g_adv' reads 'nowhere', which phase 'G' "
                                         f"does not provide")


# ---------------------------------------------------------------------------------------
# overrides


def test_set_malformed(basic_recipe, write_recipe):
    path = write_recipe(basic_recipe)
    assert only(errors(path, ["foo"])) == f"{path}: --set: 'foo' is not KEY=VALUE (e.g. train.steps=200)"


def test_set_into_a_value(basic_recipe, write_recipe):
    path = write_recipe(basic_recipe)
    assert only(errors(path, ["train.steps.x=1"])) == (f"{path}: --set: cannot set 'train.steps.x': "
                                                       f"train.steps is a value, not a table")


def test_set_is_typed(basic_recipe, write_recipe):
    path = write_recipe(basic_recipe)
    r = load_recipe(path, ["train.steps=7", "optim.betas=[0.1,0.2]", "data.attribute=square",
                           "train.channels_last=true", "optim.lr=1e-3"])
    assert r.train.steps == 7 and type(r.train.steps) is int
    assert r.optim.betas == (0.1, 0.2)
    assert r.data_config.attribute == "square"  # not TOML: kept as the plain string
    assert r.train.channels_last is True
    assert r.optim.lr == 1e-3


def test_set_a_bad_value_names_the_key(basic_recipe, write_recipe):
    path = write_recipe(basic_recipe)
    line = only(errors(path, ["train.steps=many"]))
    assert line.startswith(f"{path}: train.steps: input should be a valid integer")


# ---------------------------------------------------------------------------------------
# loss overrides


def test_loss_entry_matching_a_schedule_term_changes_its_weight(basic_recipe):
    basic_recipe["losses"] = [{"use": "adversarial", "name": "g_adv", "weight": 2.5}]
    r = load_recipe(basic_recipe)
    g = {t.name: t for t in r.phase_losses["G"]}
    assert list(g) == ["g_adv"]
    assert g["g_adv"].config.weight == 2.5
    assert g["g_adv"].config.inputs == {"logits": "g_fake"}  # the schedule's other settings stay
    assert [t.config.weight for t in r.phase_losses["D"]] == [1.0, 1.0]


def test_new_loss_goes_to_the_phases_that_accept_extra_losses(basic_recipe):
    basic_recipe["losses"] = [{"use": "tv", "weight": 0.1, "inputs": {"image": "fake"}}]
    r = load_recipe(basic_recipe)
    assert [t.name for t in r.phase_losses["G"]] == ["g_adv", "tv"]
    assert r.phase_losses["G"][1].config.weight == 0.1
    assert [t.name for t in r.phase_losses["D"]] == ["d_real", "d_fake"]


def test_new_loss_with_explicit_phase(basic_recipe):
    basic_recipe["losses"] = [{"use": "l2", "phase": "D", "name": "d_gap",
                               "inputs": {"pred": "d_real", "target": "d_fake"}}]
    r = load_recipe(basic_recipe)
    assert [t.name for t in r.phase_losses["D"]] == ["d_real", "d_fake", "d_gap"]
    assert [t.name for t in r.phase_losses["G"]] == ["g_adv"]


def test_override_does_not_leak_into_a_fresh_schedule(basic_recipe):
    basic_recipe["losses"] = [{"use": "adversarial", "name": "g_adv", "weight": 3.0}]
    load_recipe(basic_recipe)
    fresh = load_recipe({k: v for k, v in basic_recipe.items() if k != "losses"})
    assert fresh.phase_losses["G"][0].config.weight == 1.0


# ---------------------------------------------------------------------------------------
# the CLI


def test_cli_validate_prints_the_resolved_recipe(basic_recipe, write_recipe, capsys):
    path = write_recipe(basic_recipe)
    assert cli.main(["validate", str(path), "--set", "train.steps=5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["steps"] == 5
    assert out["train"]["grad_accum"] == 1 and out["train"]["seed"] == 0      # defaults filled
    assert out["parts"]["G"] == {"use": "basic.generator", "z_dim": 8, "width": 4, "condition": None}
    assert out["schedule"] == {"use": "alternating", "d_every": 1, "g_every": 1, "mode": "nonsaturating",
                               "condition": None}
    assert out["data"]["source"] == "blobs" and out["data"]["split"] == "train"
    assert out["output"]["dir"] == "runs/tiny"
    assert out["optim"]["betas"] == [0.5, 0.999]


def test_cli_validate_bad_recipe_exits_2_one_line_per_problem(basic_recipe, write_recipe, capsys):
    basic_recipe["trian"] = {}                              # a structural problem ...
    basic_recipe["parts"]["G"]["use"] = "basic.generatr"    # ... and two of meaning
    basic_recipe["train"]["grad_accum"] = 3
    path = write_recipe(basic_recipe)
    assert cli.main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.splitlines() == [
        f"{path}: trian: unknown key; did you mean 'train'?",
        f"{path}: parts.G.use: unknown generator part 'basic.generatr'; did you mean 'basic.generator' (plugin 'gancore')?",
        f"{path}: train.grad_accum: 3 does not divide the batch size of stream 'batch' (train.batch_size = 4)",
    ]


def test_cli_set_malformed_exits_2(basic_recipe, write_recipe, capsys):
    path = write_recipe(basic_recipe)
    assert cli.main(["validate", str(path), "--set", "foo"]) == 2
    assert capsys.readouterr().err.strip() == f"{path}: --set: 'foo' is not KEY=VALUE (e.g. train.steps=200)"


def test_cli_schema_prints_json_schema(capsys):
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object"
    assert {"recipe", "data", "parts", "schedule", "losses", "optim", "train", "output"} <= set(schema["properties"])
    assert schema["required"] == ["recipe", "schedule"] or set(schema["required"]) == {"recipe", "schedule"}
    train = schema["$defs"]["TrainSection"]
    assert train["additionalProperties"] is False
    assert train["properties"]["precision"]["enum"] == ["no", "fp16", "bf16", "auto"]


def test_resolved_recipe_round_trips(basic_recipe, tmp_path):
    """What validate prints is itself a valid recipe that resolves to the same thing."""
    r = load_recipe(basic_recipe)
    again = load_recipe(r.as_dict())
    assert again.as_dict() == r.as_dict()


def test_set_accepts_bracket_indices(basic_recipe, write_recipe, builtin_registry):
    from gancore.recipe import apply_overrides

    data = {"losses": [{"use": "tv", "weight": 1.0}]}
    assert apply_overrides(data, ["losses[0].weight=0.25"]) == []
    assert data["losses"][0]["weight"] == 0.25
    assert apply_overrides(data, ["losses.0.weight=0.5"]) == [] and data["losses"][0]["weight"] == 0.5
