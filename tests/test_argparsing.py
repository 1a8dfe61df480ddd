"""One parser for every command: booleans three ways, option groups as dotted flags and nested YAML, and
the old spellings still read, each with one deprecation warning."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from realness.argparsing import parse_dataclasses


@dataclass
class Inner:
    size: int = field(default=3, metadata={"help": "A size."})
    name: str = field(default="a", metadata={"help": "A name.", "aliases": ("label",)})


@dataclass
class Outer:
    out: str = field(default="o", metadata={"help": "Out.", "flag": "out", "aliases": ("output_dir",)})
    fast: bool = field(default=False, metadata={"help": "Fast."})
    mode: str = field(default="x", metadata={"help": "Mode.", "choices": ("x", "y")})
    inner: Inner = field(default_factory=Inner, metadata={"prefix": "grp", "flat_aliases": True, "help": "G."})


def test_booleans_take_a_bare_flag_a_value_or_no_flag():
    assert parse_dataclasses([Outer], ["--fast"])[0].fast is True
    assert parse_dataclasses([Outer], ["--fast", "false"])[0].fast is False
    assert parse_dataclasses([Outer], ["--fast", "--no_fast"])[0].fast is False
    assert parse_dataclasses([Outer], [])[0].fast is False
    with pytest.raises(SystemExit):
        parse_dataclasses([Outer], ["--mode", "z"])  # choices are checked


def test_groups_are_dotted_flags_nested_yaml_and_old_flat_names_with_a_warning(tmp_path, caplog):
    cfg = parse_dataclasses([Outer], ["--grp.size", "5", "--grp.name", "b"])[0]
    assert cfg.inner == Inner(5, "b")
    (tmp_path / "c.yaml").write_text("grp:\n  size: 7\nout: here\n")
    cfg = parse_dataclasses([Outer], ["--config", str(tmp_path / "c.yaml"), "--grp.name", "c"])[0]
    assert (cfg.inner, cfg.out) == (Inner(7, "c"), "here")
    (tmp_path / "dotted.yaml").write_text("grp.size: 8\n")
    assert parse_dataclasses([Outer], ["--config", str(tmp_path / "dotted.yaml")])[0].inner.size == 8
    with caplog.at_level(logging.WARNING):
        cfg = parse_dataclasses([Outer], ["--size", "9", "--label", "d", "--output_dir", "there"])[0]
    assert (cfg.inner, cfg.out) == (Inner(9, "d"), "there")
    warned = [r.getMessage() for r in caplog.records]
    assert any("--size is deprecated" in w and "--grp.size" in w for w in warned)
    assert any("--output_dir is deprecated" in w and "--out" in w for w in warned)
    caplog.clear()
    (tmp_path / "flat.yaml").write_text("size: 4\noutput_dir: z\n")
    with caplog.at_level(logging.WARNING):
        cfg = parse_dataclasses([Outer], ["--config", str(tmp_path / "flat.yaml")])[0]
    assert (cfg.inner.size, cfg.out) == (4, "z") and len(caplog.records) == 2
    (tmp_path / "bad.yaml").write_text("grp:\n  nope: 1\n")
    with pytest.raises(SystemExit):
        parse_dataclasses([Outer], ["--config", str(tmp_path / "bad.yaml")])


def test_the_real_groups_read_as_their_flat_forms_did():
    """CORE's preset is the model group's starting point; run's DREAM group; the describer's LoRA group."""
    from describe.training import DescriberTrainConfig
    from realness.core.training import CoreTrainConfig
    from realness.pipeline import RunConfig

    (core,) = parse_dataclasses([CoreTrainConfig], ["--data", "d", "--preset", "offline", "--model.image_size", "4", "4"])
    assert core == CoreTrainConfig.from_flat(data="d", preset="offline", image_size=(4, 4))
    assert core.model.image_backbone == "offline/efficientnet_lite0" and core.model.image_size == (4, 4)
    (run,) = parse_dataclasses([RunConfig], ["imgs", "--dream.source", "evidence", "--no_dream"])
    assert (run.images, run.dream, run.dream_config.source) == ("imgs", False, "evidence")
    (desc,) = parse_dataclasses([DescriberTrainConfig], ["--data", "d", "--lora.r", "4", "--lora_alpha", "8"])
    assert (desc.lora.r, desc.lora.alpha) == (4, 8)
    assert desc == DescriberTrainConfig.from_flat(data="d", lora_r=4, lora_alpha=8)


def test_the_shipped_training_configs_use_the_current_names(caplog):
    """Every training/configs YAML reads with no deprecation warning, as the parser and from_flat alike."""
    from pathlib import Path

    import yaml

    from describe.training import DescriberTrainConfig
    from realness.core.training import CoreTrainConfig

    root = Path(__file__).resolve().parents[1]
    configs = sorted((root / "training" / "configs").glob("*_*.yaml"))
    for path in configs:
        if path.stem == "core_multiset":  # training/train_core_multiset.py's own options
            import importlib.util
            import sys

            spec = importlib.util.spec_from_file_location("train_core_multiset", root / "training" / "train_core_multiset.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            with caplog.at_level(logging.WARNING):
                (cfg,) = parse_dataclasses([module.MultisetTrainConfig], ["--config", str(path)])
            assert cfg.sets == ["raise", "agiqa3k"] and cfg.model.image_views == "crops" and cfg.model.image_levels == 8
            continue
        cls = {"core": CoreTrainConfig, "describer": DescriberTrainConfig}.get(path.stem.split("_")[0])
        if cls is None:
            continue
        with caplog.at_level(logging.WARNING):
            (cfg,) = parse_dataclasses([cls], ["--config", str(path)])
        assert cfg == cls.from_flat(**yaml.safe_load(path.read_text())), path
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == []
