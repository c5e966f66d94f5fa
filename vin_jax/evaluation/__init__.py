"""Video metrics without downloaded weights: MAWE-DIS, scene cuts, consistency proxies, sprite attributes.

Names are re-exported lazily, so importing a light submodule (e.g. FLOPs accounting) does not pull in
OpenCV and PySceneDetect.
"""
import importlib

_EXPORTS = {
    "mawe_dis": "mawe",
    "mawe_components": "mawe",
    "count_scene_cuts": "scene_cuts",
    "scene_cut_frames": "scene_cuts",
    "subject_consistency_proxy": "consistency",
    "background_consistency_proxy": "consistency",
    "vbench_consistency": "consistency",
    "attribute_consistency": "attributes",
    "evaluate_video": "report",
    "evaluate_paths": "report",
    "evaluate_samples_dir": "report",
    "frame_difference_stats": "report",
    "summarize": "report",
    "write_json_atomic": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
