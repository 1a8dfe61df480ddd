"""CORE: the cross-modal realness estimator (image backbone + text encoder + fully connected head)."""

from realness.core.configuration import PRESETS, CoreConfig, list_presets
from realness.core.modeling import CoreModel, create_core

__all__ = ["CoreConfig", "CoreModel", "create_core", "list_presets", "PRESETS"]
