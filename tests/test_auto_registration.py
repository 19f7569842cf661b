"""`import ila_hf` registers the ILA classes with transformers' Auto classes without importing torch itself."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from ila_hf import ILAForVideoClassification, ILAVideoProcessor

from .helpers import tiny_ila_config


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("registered")
    ILAForVideoClassification(tiny_ila_config()).save_pretrained(folder)
    ILAVideoProcessor(num_frames=4).save_pretrained(folder)
    return folder


def run_python(script: str, *arguments) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, arguments)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.slow
def test_import_ila_hf_is_light_and_auto_classes_load_ila_folders(saved_folder):
    shown = run_python(
        """
        import sys
        import ila_hf

        print(*(name in sys.modules for name in ("torch", "transformers")))
        from transformers import AutoModelForVideoClassification, AutoVideoProcessor

        model = AutoModelForVideoClassification.from_pretrained(sys.argv[1])
        print(type(model).__module__, type(model).__name__, type(AutoVideoProcessor.from_pretrained(sys.argv[1])).__name__)
        """,
        saved_folder,
    )
    assert shown == ["False", "False", "ila_hf.modeling_ila", "ILAForVideoClassification", "ILAVideoProcessor"]


@pytest.mark.slow
def test_classes_imported_from_their_modules_are_registered_and_save_their_code(tmp_path):
    # modeling_ila imports transformers, which imports its Auto modules half-way through CLIP's: the registration
    # must wait for the outermost import to finish.
    shown = run_python(
        """
        import sys
        from ila_hf.modeling_ila import ILAForVideoClassification
        from ila_hf.configuration_ila import ILAVideoConfig
        from transformers import AutoConfig

        print(type(AutoConfig.for_model("ila")).__name__)
        config = ILAVideoConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                                image_size=64, patch_size=16, num_frames=2)
        ILAForVideoClassification(config).save_pretrained(sys.argv[1])
        """,
        tmp_path,
    )
    assert shown == ["ILAVideoConfig"]
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_ila.ILAVideoConfig",
        "AutoModel": "modeling_ila.ILAVideoModel",
        "AutoModelForVideoClassification": "modeling_ila.ILAForVideoClassification",
    }
    assert (tmp_path / "modeling_ila.py").is_file() and (tmp_path / "configuration_ila.py").is_file()
