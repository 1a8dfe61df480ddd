"""realness: how real does an AI-generated image look, why, and where.

Public API (imported lazily, so `import realness` stays light):

    create_core, CoreModel, CoreConfig, list_presets   CORE models (realness.core)
    train_core, CoreTrainConfig, ablate_modes          training / cross-validation (realness.core.training)
    run, RunConfig                                      end to end: images -> scores, maps, report (realness.pipeline)
    score_images, score_folder                          scoring (realness.scoring)
    load_raise, load_manifest, kfold                    data (realness.data)
    correlations, evaluate_file                         metrics and reports (realness.metrics, realness.evaluation)
    load_image, ImageError                              robust image loading (realness.images)
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "create_core": "realness.core",
    "CoreModel": "realness.core",
    "CoreConfig": "realness.core",
    "list_presets": "realness.core",
    "train_core": "realness.core.training",
    "CoreTrainConfig": "realness.core.training",
    "ablate_modes": "realness.core.training",
    "run": "realness.pipeline",
    "RunConfig": "realness.pipeline",
    "score_images": "realness.scoring",
    "score_folder": "realness.scoring",
    "load_raise": "realness.data",
    "load_manifest": "realness.data",
    "kfold": "realness.data",
    "correlations": "realness.metrics",
    "evaluate_file": "realness.evaluation",
    "load_image": "realness.images",
    "ImageError": "realness.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'realness' has no attribute {name!r}")
