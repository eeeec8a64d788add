"""Prompt sets by name, and class names -> ensembled text embeddings.

A prompt set is a JSON or YAML file (``<name>.json``, ``.yaml`` or ``.yml``) with ``templates``
(strings holding one ``{}`` for the class name), ``other_class`` (the wording of the extra
"other" class used by threshold samples) and an optional ``description``. Sets are found by
name in a registry of folders, like open_clip's model configs: the shipped ``prompts/`` folder
first, then folders added with ``add_prompt_dir``; a later folder's set overrides an earlier
one of the same name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .cache import EmbeddingCache, from_stored, text_key, to_stored
from .embed import ClipModel, encode_texts

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the clipsei package
# installed wheel: <package>/prompts; source checkout: <repo>/prompts
_PROMPT_DIRS = [next((d for d in (_PACKAGE_DIR / "prompts", _PACKAGE_DIR.parent / "prompts")
                      if d.is_dir()), _PACKAGE_DIR / "prompts")]
_PROMPT_FILES: dict = {}  # name -> file path
_KEYS = {"name", "description", "templates", "other_class"}
_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class PromptSet:
    """Templates (each with one ``{}``) and the "other" class wording of one imaging domain."""

    name: str
    templates: tuple
    other_class: str
    description: str = ""

    def format(self, class_name: str) -> list:
        """The prompts of one class: every template with ``{}`` replaced by ``class_name``."""
        return [template.replace("{}", class_name) for template in self.templates]


def _rescan_prompt_sets() -> None:
    _PROMPT_FILES.clear()
    for folder in _PROMPT_DIRS:
        files = [folder] if folder.is_file() else sorted(
            path for path in folder.iterdir() if path.suffix.lower() in _SUFFIXES)
        _PROMPT_FILES.update({path.stem: path for path in files})


def list_prompt_sets() -> list:
    """Names of every registered prompt set, sorted."""
    return sorted(_PROMPT_FILES)


def add_prompt_dir(path) -> None:
    """Register a folder of ``<name>.json``/``.yaml``/``.yml`` prompt sets (or one such file)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"prompt folder not found: {path}")
    if path.is_file() and path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"prompt set files must be .json, .yaml or .yml; got {path}")
    _PROMPT_DIRS.append(path)
    _rescan_prompt_sets()


def load_prompt_set(name_or_path) -> PromptSet:
    """A registered set by name (see ``list_prompt_sets``) or a JSON/YAML file by path."""
    if isinstance(name_or_path, PromptSet):
        return name_or_path
    key = str(name_or_path)
    if key in _PROMPT_FILES:
        return _parse_prompt_file(_PROMPT_FILES[key])
    path = Path(key).expanduser()
    if path.suffix.lower() in _SUFFIXES or path.exists():
        if path.is_dir():
            raise ValueError(f"prompt set {path} is a folder; pass one .json/.yaml file of it "
                             "(or register the folder with add_prompt_dir)")
        if not path.is_file():
            raise FileNotFoundError(f"prompt set file not found: {path}")
        return _parse_prompt_file(path)
    raise ValueError(f"prompt_set must be one of {list_prompt_sets()} or a .json/.yaml file; "
                     f"got {key!r}")


def _parse_prompt_file(path: Path) -> PromptSet:
    spec = _read_spec(path)
    if not isinstance(spec, dict):
        raise ValueError(f"prompt set {path} must hold a mapping (a JSON object or YAML "
                         f"mapping); got {type(spec).__name__}")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ValueError(f"prompt set {path} has unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    templates = spec.get("templates")
    if not isinstance(templates, list) or not templates or not all(
            isinstance(t, str) for t in templates):
        raise ValueError(f"prompt set {path} must have 'templates': a non-empty list of strings")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(
            f"prompt set {path}: each template must hold exactly one '{{}}'; got {bad[0]!r}")
    other = spec.get("other_class")
    if not isinstance(other, str) or not other.strip():
        raise ValueError(f"prompt set {path} must have 'other_class': a non-empty string")
    return PromptSet(name=str(spec.get("name", path.stem)), templates=tuple(templates),
                     other_class=other, description=str(spec.get("description", "")))


def _read_spec(path: Path):
    """The parsed content of a prompt file: YAML for ``.yaml``/``.yml``, JSON otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"prompt set {path} is not UTF-8 text: {err}") from err
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"prompt set {path} is not valid YAML{where}: {problem}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"prompt set {path} is not valid JSON: {err}") from err


def encode_class_prompts(class_names, model: ClipModel, *, prompt_set="generic",
                         cache_dir=None) -> np.ndarray:
    """Class names -> (K, D) float32 text embeddings, unit L2 norm (prompt ensembling).

    Each class's prompts are encoded and L2-normalised, averaged, and the mean normalised again.
    Underscores in class names become spaces ("basal_cell_carcinoma"). Text embeddings are cached
    under ``cache_dir`` like image embeddings.
    """
    if isinstance(class_names, str) or not len(class_names):
        raise ValueError(f"class_names must be a non-empty list of strings; got {class_names!r}")
    if not isinstance(model, ClipModel):
        raise TypeError(
            f"model must be a ClipModel from load_clip_model; got {type(model).__name__}")
    prompts = load_prompt_set(prompt_set)
    per_class = [prompts.format(str(name).replace("_", " ")) for name in class_names]
    embeddings = _encode_cached([text for texts in per_class for text in texts], model, cache_dir)
    means = embeddings.reshape(len(per_class), len(prompts.templates), -1).mean(axis=1)
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def encode_other_prompt(model: ClipModel, *, prompt_set="generic", cache_dir=None) -> np.ndarray:
    """(D,) float32 ensembled text embedding of the set's "other" class (threshold samples)."""
    other = load_prompt_set(prompt_set).other_class
    return encode_class_prompts([other], model, prompt_set=prompt_set, cache_dir=cache_dir)[0]


def _encode_cached(texts: list, model: ClipModel, cache_dir) -> np.ndarray:
    """N texts -> (N, D) float32 unit rows rounded through float16 as the cache stores them
    (the same numbers with and without a cache), reading and filling the cache if given."""
    if cache_dir is None:
        return from_stored(to_stored(encode_texts(texts, model)))
    keys = [text_key(text) for text in texts]
    with EmbeddingCache(cache_dir, model.cache_fields("text"), flush_every=1 << 30,
                        dim=model.embed_dim) as cache:
        found, cached = cache.lookup(keys)
        embeddings = np.zeros((len(texts), model.embed_dim), np.float32)
        if found.any():
            embeddings[found] = cached
        missing = np.flatnonzero(~found)
        if missing.size:
            new = encode_texts([texts[i] for i in missing], model)
            cache.add([keys[i] for i in missing], [texts[i] for i in missing],
                      [keys[i] for i in missing], new)
            embeddings[missing] = from_stored(to_stored(new))
    logger.info("text prompts: %d cached, %d encoded", int(found.sum()), missing.size)
    return embeddings


_rescan_prompt_sets()
