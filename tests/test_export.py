"""export: ONNX and TorchScript files that take raw 0-255 images and predict as evaluate does."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

from pipeline.commands.export import command as export
from pipeline.lib.mnist import load_official
from pipeline.lib.model_file import INPUT_CONVENTION

from conftest import run_pipeline, small_params, write_params


@pytest.mark.slow  # exports to ONNX
@pytest.mark.parametrize("model", [{}, {"architecture": "cnn", "hidden_sizes": [120, 84]}])
def test_exported_files_predict_raw_images_as_evaluate_does_and_state_their_input(tmp_path, raw_dir, run_stage, model):
    params_file = write_params(tmp_path / "params.yaml", small_params(model=model))
    paths = run_pipeline(run_stage, params_file, raw_dir, tmp_path)
    result = CliRunner().invoke(export.main, ["--model", str(paths["model"]), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    onnx_file, torchscript_file = tmp_path / "export" / export.ONNX_NAME, tmp_path / "export" / export.TORCHSCRIPT_NAME

    raw = load_official(raw_dir, "test").images.astype(np.float32)  # (N, 28, 28), 0-255, as a user has them
    evaluated = np.load(paths["probs"])
    session = onnxruntime.InferenceSession(str(onnx_file))
    from_onnx = session.run(["probabilities"], {"images": raw})[0]
    extra = {f"{export.CONVENTION_KEY}.json": ""}
    scripted = torch.jit.load(str(torchscript_file), _extra_files=extra)
    from_torchscript = scripted(torch.from_numpy(raw)).numpy()
    for probabilities in (from_onnx, from_torchscript):
        assert np.array_equal(probabilities.argmax(1), evaluated.argmax(1))
        assert np.allclose(probabilities, evaluated, atol=1e-5)
    assert from_onnx[:1].shape == session.run(["probabilities"], {"images": raw[:1]})[0].shape  # any batch size

    stated = {prop.key: prop.value for prop in onnx.load(str(onnx_file)).metadata_props}
    convention = json.loads(stated[export.CONVENTION_KEY])
    assert convention["shape"] == INPUT_CONVENTION["shape"] == [28, 28]
    assert convention["ink"] == "white digit on black" and convention["pixel_range"] == [0, 255]
    assert json.loads(extra[f"{export.CONVENTION_KEY}.json"]) == convention


def test_a_missing_model_is_one_line(tmp_path):
    result = CliRunner().invoke(export.main, ["--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "export")])
    assert (
        result.exit_code == 1
        and result.output.strip()
        == f"error: {tmp_path / 'none.pt'} not found: run the train stage first (dvc repro train)"
    )
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").iterdir())
