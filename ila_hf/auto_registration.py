"""Registration of the ILA classes with transformers' Auto classes, made when transformers loads them.

Importing any of transformers' configuration, modelling or video-processing code imports torch (and the video code
torchvision): seconds of CPU that `import ila_hf`, and so `ila-hf --help`, should not cost. Instead `import ila_hf`
calls `register_when_loaded()`: each registration below runs as soon as transformers' module holding its Auto class,
or the ILA module defining its classes, has been imported, whichever comes first, and at once for those already
imported. `AutoModelForVideoClassification.from_pretrained(folder)` after `import ila_hf` thus works as if the
registration had been made eagerly, and costs nothing more than transformers' own import. The
`zero-shot-video-classification` pipeline is registered with transformers' `PIPELINE_REGISTRY` the same way, when
`transformers.pipelines` loads (e.g. `from transformers import pipeline`).

A registration never runs in the middle of an import of transformers' or ILA's modules: transformers imports its Auto
modules while its own modules are half-initialised (e.g. `@auto_docstring` on `CLIPVisionConfig` imports
`modeling_auto` before `configuration_clip` has finished), and registering then would import `configuration_ila`
against a half-initialised `configuration_clip`. So imports of `transformers` and `ila_hf` modules are counted per
thread, and the registrations due run when the outermost of them has finished.
"""

import logging
import sys
import threading


logger = logging.getLogger(__name__)


def _register_config() -> None:
    from transformers import AutoConfig

    from .configuration_ila import ZERO_SHOT_TASK, ILAVideoConfig

    AutoConfig.register(ILAVideoConfig.model_type, ILAVideoConfig, exist_ok=True)
    # `save_pretrained` then copies the code files and writes `auto_map`, so saved folders load with trust_remote_code.
    ILAVideoConfig.register_for_auto_class()
    # The zero-shot pipeline is registered by `_register_pipeline` once transformers' pipelines load, which `pipeline()`
    # does before it reads a config; a folder's declaration of it (for remote code) must not make `pipeline()` ask for
    # trust_remote_code.
    ILAVideoConfig.locally_registered_pipelines = (ZERO_SHOT_TASK,)


def _register_models() -> None:
    from transformers import AutoModel, AutoModelForVideoClassification

    from .configuration_ila import ILAVideoConfig
    from .modeling_ila import ILAForVideoClassification, ILAVideoModel

    AutoModel.register(ILAVideoConfig, ILAVideoModel, exist_ok=True)
    AutoModelForVideoClassification.register(ILAVideoConfig, ILAForVideoClassification, exist_ok=True)
    ILAVideoModel.register_for_auto_class("AutoModel")
    ILAForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")


def _register_video_processor() -> None:
    from transformers import AutoVideoProcessor

    from .configuration_ila import ILAVideoConfig
    from .video_processing_ila import ILAVideoProcessor

    AutoVideoProcessor.register(ILAVideoConfig, ILAVideoProcessor, exist_ok=True)
    ILAVideoProcessor.register_for_auto_class()


def _register_pipeline() -> None:
    from transformers import AutoModelForVideoClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    from .configuration_ila import ZERO_SHOT_TASK
    from .zero_shot_video_classification import ZeroShotVideoClassificationPipeline

    PIPELINE_REGISTRY.register_pipeline(
        ZERO_SHOT_TASK,
        pipeline_class=ZeroShotVideoClassificationPipeline,
        pt_model=AutoModelForVideoClassification,
        type="multimodal",
    )


# Each registration and the modules whose loading makes it due: transformers' Auto module, and ILA's own module (a
# class imported straight from its module must still save its code files).
_PENDING = {
    _register_config: ("transformers.models.auto.configuration_auto", f"{__package__}.configuration_ila"),
    _register_models: ("transformers.models.auto.modeling_auto", f"{__package__}.modeling_ila"),
    _register_video_processor: (
        "transformers.models.auto.video_processing_auto",
        f"{__package__}.video_processing_ila",
    ),
    _register_pipeline: ("transformers.pipelines", f"{__package__}.zero_shot_video_classification"),
}
_lock = threading.Lock()
_imports_in_progress = threading.local()  # .depth: imports of counted modules running in this thread


def _run_due_registrations() -> None:
    """Runs the pending registrations whose modules are loaded; the last one done removes the import watcher."""
    if getattr(_imports_in_progress, "depth", 0) or not _lock.acquire(blocking=False):
        return  # inside a counted import (its end calls this again), or another thread is registering
    try:
        while due := [register for register, modules in _PENDING.items() if any(m in sys.modules for m in modules)]:
            for register in due:
                del _PENDING[register]
                try:
                    register()
                except Exception as error:  # e.g. torchvision missing: the import that got here must still succeed
                    logger.warning("ILA is not registered with transformers' Auto classes (%s): %s", register.__name__, error)
        if not _PENDING and _watcher in sys.meta_path:
            sys.meta_path.remove(_watcher)
    finally:
        _lock.release()


def _is_counted(name: str) -> bool:
    return name.partition(".")[0] == "transformers" or name.startswith(f"{__package__}.")


class _CountingLoader:
    """Wraps the loader of a counted module: runs the due registrations when the outermost counted import ends."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        _imports_in_progress.depth = getattr(_imports_in_progress, "depth", 0) + 1
        try:
            self.loader.exec_module(module)
        finally:
            _imports_in_progress.depth -= 1
        _run_due_registrations()

    def __getattr__(self, name):  # get_source, get_resource_reader, ...: what the wrapped loader offers
        return getattr(self.loader, name)


class _ImportWatcher:
    """A `sys.meta_path` finder that finds nothing itself: it asks the finders after it and wraps the loader."""

    def find_spec(self, name, path=None, target=None):
        if not _is_counted(name) or self not in sys.meta_path:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader)
                return spec
        return None


_watcher = _ImportWatcher()


def register_when_loaded() -> None:
    """Registers the ILA classes with transformers' Auto classes now or, for those not yet due, once they are."""
    if _watcher not in sys.meta_path:
        sys.meta_path.insert(0, _watcher)
    _run_due_registrations()
