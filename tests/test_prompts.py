"""Prompt-set registry and ensembled class text embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

import clipsei.images.prompts as prompts
from clipsei.images.cache import from_stored, to_stored
from clipsei.images.embed import encode_texts
from clipsei.images.prompts import (
    PromptSet,
    add_prompt_dir,
    encode_class_prompts,
    encode_other_prompt,
    list_prompt_sets,
    load_prompt_set,
)

SHIPPED = ["chest_xray", "dermoscopy", "fundus", "generic", "histology", "mri"]


@pytest.fixture
def restore_registry():
    saved = list(prompts._PROMPT_DIRS)
    yield
    prompts._PROMPT_DIRS[:] = saved
    prompts._rescan_prompt_sets()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sets_are_valid(name):
    assert set(SHIPPED) <= set(list_prompt_sets())
    prompt_set = load_prompt_set(name)
    assert isinstance(prompt_set, PromptSet) and prompt_set.name == name
    assert prompt_set.templates and all(t.count("{}") == 1 for t in prompt_set.templates)
    assert prompt_set.other_class and prompt_set.description


def test_user_prompt_dir_adds_and_overrides(tmp_path, restore_registry):
    spec = {"templates": ["an ultrasound of {}."], "other_class": "another finding"}
    (tmp_path / "ultrasound.json").write_text(json.dumps(spec))
    (tmp_path / "generic.json").write_text(json.dumps({**spec, "description": "mine"}))
    add_prompt_dir(tmp_path)
    assert "ultrasound" in list_prompt_sets()
    assert load_prompt_set("ultrasound").templates == ("an ultrasound of {}.",)
    assert load_prompt_set("generic").description == "mine"
    loaded = load_prompt_set(tmp_path / "ultrasound.json")
    assert loaded.format("a cyst") == ["an ultrasound of a cyst."]


def test_yaml_prompt_sets_load_like_json(tmp_path, restore_registry):
    (tmp_path / "ultrasound.yaml").write_text(
        "description: breast ultrasound\n"
        "templates:\n  - 'an ultrasound of {}.'\n  - 'a sonogram showing {}.'\n"
        "other_class: another finding\n")
    (tmp_path / "us.json").write_text(json.dumps({
        "description": "breast ultrasound", "other_class": "another finding",
        "templates": ["an ultrasound of {}.", "a sonogram showing {}."]}))
    from_yaml = load_prompt_set(tmp_path / "ultrasound.yaml")
    from_json = load_prompt_set(tmp_path / "us.json")
    assert (from_yaml.templates, from_yaml.other_class, from_yaml.description) == (
        from_json.templates, from_json.other_class, from_json.description)
    add_prompt_dir(tmp_path)
    assert {"ultrasound", "us"} <= set(list_prompt_sets())
    assert load_prompt_set("ultrasound").name == "ultrasound"


@pytest.mark.parametrize("content, message", [
    ("templates: [unclosed", "is not valid YAML"),
    ("- a list\n- not a mapping\n", "must hold a mapping"),
    ("templates:\n  - {}\nother_class: x\n", "non-empty list of strings"),  # {} is a mapping
])
def test_malformed_yaml_prompt_files(tmp_path, content, message):
    path = tmp_path / "bad.yml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_prompt_set(path)
    assert "\n" not in str(info.value)


def test_yaml_syntax_error_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("templates: [a photo of {}\n")
    with pytest.raises(ValueError) as info:
        load_prompt_set(path)
    assert str(info.value) == (f"prompt set {path} is not valid YAML at line 1, column 24: "
                               "expected ',' or ']', but got '{'")


def test_ensemble_is_the_normalised_mean_of_template_embeddings(tiny_clip):
    class_prompts = encode_class_prompts(["cat", "traffic_light"], tiny_clip)
    assert class_prompts.shape == (2, 16) and class_prompts.dtype == np.float32
    texts = encode_texts(load_prompt_set("generic").format("traffic light"), tiny_clip)
    mean = from_stored(to_stored(texts)).mean(axis=0)  # template rows as the cache stores them
    np.testing.assert_allclose(class_prompts[1], mean / np.linalg.norm(mean), atol=1e-6)
    other = encode_other_prompt(tiny_clip, prompt_set="mri")
    assert other.shape == (16,)
    np.testing.assert_allclose(other, encode_class_prompts(["another finding"], tiny_clip,
                                                           prompt_set="mri")[0])


def test_text_embeddings_are_cached(tiny_clip, tmp_path, monkeypatch):
    uncached = encode_class_prompts(["cat", "dog"], tiny_clip, prompt_set="fundus")
    first = encode_class_prompts(["cat", "dog"], tiny_clip, prompt_set="fundus", cache_dir=tmp_path)
    np.testing.assert_array_equal(first, uncached)  # the same float16 rounding either way

    def must_not_encode(*args, **kwargs):
        raise AssertionError("a cached prompt was encoded again")

    monkeypatch.setattr(prompts, "encode_texts", must_not_encode)
    second = encode_class_prompts(["cat", "dog"], tiny_clip, prompt_set="fundus",
                                  cache_dir=tmp_path)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a mapping"),
    ('{"templates": ["a {}"], "other_class": "x", "colour": 1}', r"unknown keys \['colour'\]"),
    ('{"templates": [], "other_class": "x"}', "non-empty list of strings"),
    ('{"templates": ["no slot"], "other_class": "x"}', "exactly one '{}'; got 'no slot'"),
    ('{"templates": ["a {}"], "other_class": ""}', "'other_class': a non-empty string"),
])
def test_malformed_prompt_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_prompt_set(path)


def test_prompt_errors(tmp_path, tiny_clip):
    with pytest.raises(ValueError, match=r"prompt_set must be one of \['chest_xray'.*got 'xray'"):
        load_prompt_set("xray")
    with pytest.raises(FileNotFoundError, match="prompt set file not found"):
        load_prompt_set(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match="prompt folder not found"):
        add_prompt_dir(tmp_path / "absent")
    (tmp_path / "set.txt").write_text("x")
    with pytest.raises(ValueError, match="must be .json, .yaml or .yml"):
        add_prompt_dir(tmp_path / "set.txt")
    with pytest.raises(ValueError, match="class_names must be a non-empty list"):
        encode_class_prompts("cat", tiny_clip)
    with pytest.raises(TypeError, match="model must be a ClipModel"):
        encode_class_prompts(["cat"], object())


def test_upper_case_yaml_suffix_is_read_as_yaml_and_a_folder_is_named(tmp_path):
    (tmp_path / "Scans.YAML").write_text("templates: ['an MRI of {}']\nother_class: noise\n")
    assert load_prompt_set(tmp_path / "Scans.YAML").templates == ("an MRI of {}",)
    with pytest.raises(ValueError, match="is a folder; pass one .json/.yaml file of it"):
        load_prompt_set(tmp_path)
