"""The params.yaml schema: both shipped profiles pass, and each kind of mistake stops a stage
with one line naming the key, the value and what is allowed, before any data is read."""

import copy
from pathlib import Path

import pytest
import yaml

from cxrstn.io import load_params
from cxrstn.params import ParamsError, check_params
from cxrstn.settings import SETTINGS, run_settings

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.name for p in ROOT.glob("params*.yaml"))  # params.paper.yaml, ...


def profile(name: str = "params.yaml") -> dict:
    return load_params(ROOT / name, check=False)


def edited(section: str, key: str, value, base: dict | None = None) -> dict:
    params = copy.deepcopy(base or profile())
    params[section][key] = value
    return params


@pytest.mark.parametrize("name", PROFILES)
def test_the_shipped_profiles_are_valid_and_complete(name):
    assert {"params.yaml", "params.paper.yaml"} <= set(PROFILES)
    assert check_params(profile(name), name) == []


# (section, key, value, what the one line must say is allowed)
MISTAKES = [
    ("classifier", "epochz", 5, "unknown key; did you mean epochs?"),
    ("classifier", "epochs", -1, "must be >= 1"),
    ("detector", "epochs", 0, "must be >= 1"),
    ("split", "folds", 1, "must be >= 3"),
    ("stn", "sy_init", 0, "must be > 0"),
    ("classifier", "input_size", 16, "must be >= 32 (VGG16 halves it five times"),
    ("crop", "conf", 1.5, "must be <= 1"),
    ("labels", "uncertain", "one", "must be 'ones', 'zeros' or 'ignore'"),
    ("crop", "tta", "yes", "must be true or false"),
    ("classifier", "lr", "1e-5", "must be a number"),
    ("classifier", "epochs", 5.5, "must be a whole number"),
    ("detector", "imgsz", 100, "must be a multiple of 32"),
    ("detector", "batch", 0, "must be >= 1 or -1"),
    ("detector", "weights_sha256", "abc", "must be 64 hex digits"),
    ("train", "device", "gpu", "must be auto, cuda, cuda:N, mps or cpu"),
    ("phantom", "jsrt_side", 65, "must be even"),
]


@pytest.mark.parametrize(("section", "key", "value", "allowed"), MISTAKES)
def test_each_mistake_is_one_line_naming_key_value_and_what_is_allowed(
    section, key, value, allowed
):
    problems = check_params(edited(section, key, value))
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    assert line.startswith(f"params.yaml: {section}.{key}")
    assert allowed in line
    if "unknown" not in allowed:
        assert f"= {value!r}" in line if isinstance(value, str) else f"= {value}" in line


def test_a_misspelt_section_and_a_list_item_are_named():
    params = profile()
    params["clasifier"] = params.pop("classifier")
    problems = check_params(params)
    assert any("clasifier: unknown key; did you mean classifier?" in p for p in problems)
    assert any("classifier: missing" in p for p in problems)
    line = check_params(edited("labels", "views", ["PA", "XX"]))[0]
    assert line.startswith("params.yaml: labels.views[1] = 'XX': must be 'PA'")


def test_relations_between_keys():
    params = profile()

    def only(p):
        problems = check_params(p)
        assert len(problems) == 1, problems
        return problems[0]

    assert "fold_ids = [0, 1, 2, 3, 4]: must be [0, 1, 2]" in only(edited("split", "folds", 3))
    some = only(edited("split", "stn_eq_fold_ids", [0, 1]))
    assert "split.stn_eq_fold_ids = [0, 1]: must be [] (stn_eq left out) or split.fold_ids" in some
    assert check_params(edited("split", "stn_eq_fold_ids", [0, 1, 2, 3, 4])) == []
    small = edited("classifier", "sample_size", params["classifier"]["input_size"] - 1)
    assert "classifier.sample_size" in only(small) and "at least classifier.input_size" in only(
        small
    )
    assert "stn.sx_init = 1.0: must lie inside stn.scale_range (0.5, 0.9)" in "\n".join(
        check_params(edited("stn", "scale_range", [0.5, 0.9]))
    )
    assert "stn.keep_inside = true: needs stn.scale_range with high <= 1" in only(
        edited("stn", "keep_inside", True)
    )
    warm = edited("stn", "warmup_epochs", 1)
    assert "stn.warmup_sides = [0.8, 0.6]: must be [low, high], low <= high" in only(
        edited("stn", "warmup_sides", [0.8, 0.6], warm)
    )
    assert "stn.warmup_sides = [0.6, 0.8]: needs stn.warmup_epochs >= 1" in only(
        edited("stn", "warmup_sides", [0.6, 0.8], edited("stn", "warmup_epochs", 0))
    )
    assert check_params(edited("stn", "warmup_sides", [0.6, 0.8], warm)) == []
    authors = edited("stn", "loc_net", "authors", edited("classifier", "input_size", 64))
    assert "stn.loc_net authors needs at least 78 px" in only(authors)
    typo = copy.deepcopy(params)
    typo["detector"]["augment"]["mosiac"] = 1.0
    assert only(typo).endswith("detector.augment.mosiac: not an ultralytics training setting; "
                               "did you mean mosaic?")  # fmt: skip
    twice = copy.deepcopy(params)
    twice["detector"]["augment"]["epochs"] = 3
    assert "set twice" in only(twice)


def test_a_partial_file_passes_its_present_keys_only_when_not_complete():
    partial = {"crop": {"conf": 0.9, "tta": False}, "detector": {"imgsz": 64}}
    assert check_params(partial, complete=False) == []
    assert "params.yaml: crop.low_conf: missing" in check_params(partial)
    partial["crop"]["conf"] = 2
    assert check_params(partial, complete=False) == ["params.yaml: crop.conf = 2: must be <= 1.0"]


def test_load_params_refuses_bad_values_and_reads_dvc_floats(tmp_path):
    path = tmp_path / "params.yaml"
    params = profile()
    text = yaml.safe_dump(params, sort_keys=False).replace("lr: 0.0002", "lr: 2e-04")
    path.write_text(text)
    assert load_params(path)["classifier"]["lr"] == 2e-4  # YAML 1.2 float, as dvc -S writes
    path.write_text(yaml.safe_dump(edited("crop", "conf", 1.5), sort_keys=False))
    with pytest.raises(ParamsError, match=r"params\.yaml: crop\.conf = 1\.5: must be <= 1"):
        load_params(path)
    assert load_params(path, check=False)["crop"]["conf"] == 1.5


STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_stops_on_bad_params_before_reading_data(stage, tmp_path, run_stage):
    """The folder holds nothing but params.yaml: a stage that read anything first would
    fail on a missing file instead of naming the parameter."""
    params = edited("classifier", "epochz", 5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    args = ("--setting", "baseline", "--fold", "0") if stage == "train" else ()
    with pytest.raises(SystemExit) as stopped:
        run_stage(stage, tmp_path, *args)
    message = str(stopped.value.code)
    assert message.startswith("error: params.yaml: classifier.epochz: unknown key"), message
    assert message.count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_stn_eq_runs_only_where_its_folds_are_listed():
    assert run_settings(profile()) == ["baseline", "yolo", "stn"]
    assert run_settings(profile("params.attention.yaml")) == list(SETTINGS)
    assert run_settings(profile("params.paper.yaml")) == ["baseline", "yolo", "stn"]
