"""DREAM: dense realness maps from a description of what looks unreal (open_clip, imported lazily)."""

from realness.dream.configuration import DreamConfig
from realness.dream.text import parse_verdict, split_phrases

__all__ = ["DreamConfig", "DreamMapper", "RealnessMap", "map_folder", "evaluate_maps", "parse_verdict", "split_phrases"]


def __getattr__(name: str):
    if name in ("DreamMapper", "RealnessMap"):
        from realness.dream import maps

        return getattr(maps, name)
    if name in ("map_folder", "evaluate_maps"):
        from realness.dream import run

        return getattr(run, name)
    raise AttributeError(f"module 'realness.dream' has no attribute {name!r}")
