"""The one registry of model names: every bundled model is there and loads by its name, the modules take their
names from it, and `realness models` lists it."""

from __future__ import annotations

import json
import re

import pytest

from realness.registry import BUNDLED_CORE, KINDS, SOURCES, get_model, list_models


def test_every_bundled_model_is_listed_and_its_files_are_there():
    from realness.core.modeling import resolve_core

    bundled = {e.name: e for e in list_models() if e.source == "bundled"}
    assert set(BUNDLED_CORE) | {"offline/small-describer", "offline/artifact-map", "offline/aspect-tagger"} == set(bundled)
    from realness.dream.aspects import resolve_aspect_tagger

    assert str(resolve_aspect_tagger("offline/aspect-tagger")) == bundled["offline/aspect-tagger"].loads_from
    assert (resolve_aspect_tagger("offline/aspect-tagger") / "model.safetensors").is_file()
    for name in BUNDLED_CORE:
        assert (resolve_core(name) / "config.json").is_file() and str(resolve_core(name)) == bundled[name].loads_from
    assert (get_model("offline/small-describer").loads_from.endswith("small-describer"))
    assert "SROCC" in get_model("offline/small-describer").measured  # read from its shipped gate.json


def test_names_follow_the_scheme_and_the_modules_use_the_registry():
    from describe import engines, small
    from realness import registry
    from realness.core import configuration
    from realness.core import modeling as core_modeling
    from realness.dream import artifact

    for e in list_models():
        assert e.kind in KINDS and e.source in SOURCES and e.what
        if e.source == "built":
            assert re.match(r"^(tiny-|realsize:)", e.name), e.name
        if e.source == "package":
            assert e.name.startswith("offline/"), e.name
    assert len({e.name for e in list_models()}) == len(list_models())  # one name, one model
    assert engines.DEFAULT_DESCRIBER is registry.DEFAULT_DESCRIBER and small.SMALL_DESCRIBER is registry.SMALL_DESCRIBER
    assert core_modeling.BUNDLED is registry.BUNDLED_CORE and artifact.BUNDLED is registry.BUNDLED_MAPS
    assert configuration.OFFLINE_TEXT_ENCODER is registry.OFFLINE_TEXT_ENCODER
    with pytest.raises(KeyError, match="realness models"):
        get_model("offline/nothing")


def test_realness_models_lists_them(capsys):
    from realness.cli import main

    assert main(["models", "--kind", "core", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(BUNDLED_CORE)
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert all(e.name in table for e in list_models()) and "fallback: offline/small-describer" in table
    assert main(["models", "--kind", "bogus"]) == 2
    assert "kind must be one of" in capsys.readouterr().err
