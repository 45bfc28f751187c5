"""`predict` classifies real-world renderings of MNIST test digits as the model classifies the originals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.commands.predict import command as predict
from pipeline.commands.predict import digitize as predict_digitize
from pipeline.commands.predict.digitize import to_mnist
from pipeline.lib.device import make_deterministic
from pipeline.lib.mnist import load_official
from pipeline.lib.model import build_model, probabilities
from pipeline.lib.model_file import load_model, save_model
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Params
from pipeline.lib.storage import Dataset
from pipeline.lib.training import train

from conftest import small_params
from idx_writer import write_idx_gz

SAMPLE = 200
pytestmark = pytest.mark.slow  # every test uses a model trained on 20,000 real MNIST images


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory, shared_mnist) -> tuple[Path, np.ndarray, np.ndarray]:
    """(model file, 200 test images, the model's predictions on them) from a quick real-MNIST model."""
    params = Params.model_validate(
        small_params(
            model={"hidden_sizes": [128]},
            train={"epochs": 2, "batch_size": 128, "augment": {"rotation_degrees": 0.0, "shift_pixels": 0.0}},
        )
    )
    train_digits, test_digits = load_official(shared_mnist, "train"), load_official(shared_mnist, "test")
    normalization = Normalization.fit(train_digits.images, params.preprocess)
    make_deterministic(0)
    network = build_model(params.model)

    def dataset(images, labels):
        return Dataset(torch.from_numpy(normalization.apply(images)), torch.from_numpy(labels).long())

    result = train(
        network,
        dataset(train_digits.images[:20000], train_digits.labels[:20000]),
        dataset(test_digits.images[:1000], test_digits.labels[:1000]),
        params.train,
        torch.zeros(784),
        lambda _: None,
    )
    network.load_state_dict(result.kept_state)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, network, params.model, normalization)
    originals = test_digits.images[-SAMPLE:]
    expected = probabilities(network, normalization.apply(originals), 1000).argmax(1)
    return path, originals, expected


def render(image: np.ndarray, variant: str) -> Image.Image:
    """An MNIST digit as a person might photograph or draw it."""
    picture = Image.fromarray(image)
    if variant == "large_inverted":  # dark ink on white paper, 5x larger
        return Image.fromarray(255 - np.asarray(picture.resize((140, 140), Image.Resampling.BICUBIC)))
    if variant == "padded_off_centre":  # small digit far from the centre of a wide canvas
        canvas = Image.new("L", (160, 100), 0)
        canvas.paste(picture.resize((56, 56), Image.Resampling.BILINEAR), (12, 30))
        return canvas
    if variant == "colour":  # blue ink on yellow paper, 3x larger
        ink = np.asarray(picture.resize((84, 84), Image.Resampling.BILINEAR)).astype(np.float32)[..., None] / 255
        paper, pen = np.array([250, 240, 170]), np.array([20, 30, 160])
        return Image.fromarray((paper * (1 - ink) + pen * ink).astype(np.uint8), "RGB")
    raise ValueError(variant)


def run_predict(*args) -> tuple[int, str]:
    result = CliRunner().invoke(predict.main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("variant", "suffix"), [("large_inverted", ".png"), ("padded_off_centre", ".bmp"), ("colour", ".jpg")]
)
def test_renderings_agree_with_the_originals(tmp_path, mnist_model, variant, suffix):
    model_path, originals, expected = mnist_model
    for index, image in enumerate(originals):
        render(image, variant).save(tmp_path / f"{index:03d}{suffix}", quality=95)
    code, output = run_predict("--model", model_path, "--json", tmp_path)
    assert code == 0, output
    results = json.loads(output)
    assert [Path(r["input"]).name for r in results] == [f"{i:03d}{suffix}" for i in range(SAMPLE)]
    agreement = np.mean([int(r["digit"]) == e for r, e in zip(results, expected)])
    assert agreement >= 0.95, f"{variant}: {agreement:.1%}"
    assert all(len(r["top"]) == 3 and r["top"][0]["digit"] == r["digit"] for r in results)


def test_digitizing_an_mnist_digit_keeps_it_in_place(mnist_model):
    _, originals, _ = mnist_model
    for image in originals[:50]:
        again = to_mnist(image.astype(np.float32))
        rows, cols = np.indices(again.shape)
        mass = again.astype(float)
        assert abs((rows * mass).sum() / mass.sum() - 14) <= 0.5
        assert abs((cols * mass).sum() / mass.sum() - 14) <= 0.5
        assert np.count_nonzero(again.any(0)) <= 20 and np.count_nonzero(again.any(1)) <= 20


def test_idx_input_is_used_as_is(tmp_path, mnist_model):
    model_path, originals, expected = mnist_model
    write_idx_gz(tmp_path / "digits-idx3-ubyte.gz", originals[:20])
    code, output = run_predict("--model", model_path, "--json", tmp_path / "digits-idx3-ubyte.gz")
    assert code == 0, output
    assert [int(r["digit"]) for r in json.loads(output)] == list(expected[:20])


def test_plain_output_names_digit_and_top_three(tmp_path, mnist_model):
    model_path, originals, expected = mnist_model
    render(originals[0], "large_inverted").save(tmp_path / "seven.png")
    code, output = run_predict("--model", model_path, tmp_path / "seven.png")
    assert code == 0
    assert output.startswith(f"{tmp_path / 'seven.png'}: {expected[0]}  (") and output.count("%") == 3


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_text("not an image"), "not an image Pillow can read"),
        (lambda p: Image.new("L", (40, 40), 255).save(p, format="PNG"), "is blank"),
        (lambda p: None, "not found"),
    ],
)
def test_bad_inputs_give_one_line(tmp_path, mnist_model, make, fragment):
    target = tmp_path / "input.png"
    make(target)
    code, output = run_predict("--model", mnist_model[0], target)
    assert code == 1 and output.count("\n") == 1 and output.startswith("error: ") and fragment in output


def test_a_model_whose_weights_changed_after_training_fails_its_integrity_check(tmp_path, mnist_model):
    """A valid model file with one weight changed: only the fingerprint can tell."""
    payload = torch.load(mnist_model[0], weights_only=True)
    payload["state_dict"]["0.weight"][0, 0] += 1.0
    tampered = tmp_path / "model.pt"
    torch.save(payload, tampered)
    Image.new("L", (28, 28), 0).save(tmp_path / "x.png")
    code, output = run_predict("--model", tampered, tmp_path / "x.png")
    assert code == 1
    assert (
        output == f"error: {tampered} fails its integrity check (its bytes changed after training): retrain "
        "with dvc repro train\n"
    )
    assert load_model(mnist_model[0]).class_names == [str(d) for d in range(10)]


def test_bytes_that_are_no_model_file_are_refused(tmp_path, mnist_model):
    broken = tmp_path / "model.pt"
    data = bytearray(mnist_model[0].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    broken.write_bytes(bytes(data))
    Image.new("L", (28, 28), 0).save(tmp_path / "x.png")
    code, output = run_predict("--model", broken, tmp_path / "x.png")
    assert code == 1 and output.startswith(f"error: {broken} ") and "retrain with dvc repro train" in output


def test_an_image_past_pillows_bomb_limit_is_one_line(tmp_path, mnist_model, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 100 x 100 image stands in for 13,500 x 13,500
    Image.new("L", (100, 100), 0).save(tmp_path / "huge.png")
    code, output = run_predict("--model", mnist_model[0], tmp_path / "huge.png")
    assert code == 1
    assert (
        output == f"error: {tmp_path / 'huge.png'} has more than 1,000 pixels, past Pillow's decompression-bomb "
        "limit: scale it down (a digit needs a few hundred pixels a side)\n"
    )


@pytest.mark.parametrize("variant", ["scan_16_bit", "white_ink_on_transparent"])
def test_16_bit_scans_and_white_ink_on_transparency_are_digits(tmp_path, mnist_model, variant):
    model_path, originals, expected = mnist_model
    for index, image in enumerate(originals[:50]):
        if variant == "scan_16_bit":  # dark ink on grey paper, spanning 21,000-31,200 of 0-65,535
            Image.fromarray((31200 - 40 * image.astype(np.int32)).astype(np.uint16)).save(tmp_path / f"{index:03d}.png")
        else:  # white strokes whose opacity is the digit, on fully transparent black
            pixels = np.zeros((*image.shape, 4), dtype=np.uint8)
            pixels[..., :3], pixels[..., 3] = 255, image
            Image.fromarray(pixels, "RGBA").save(tmp_path / f"{index:03d}.png")
    assert np.array_equal(
        to_mnist(predict_digitize.read_image(tmp_path / "000.png")), to_mnist(originals[0].astype(np.float32))
    )
    code, output = run_predict("--model", model_path, "--json", tmp_path)
    assert code == 0, output
    assert [int(r["digit"]) for r in json.loads(output)] == list(expected[:50])


def test_one_unreadable_file_does_not_stop_the_folder(tmp_path, mnist_model):
    model_path, originals, expected = mnist_model
    for index, image in enumerate(originals[:3]):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    (tmp_path / "1b.png").write_text("not an image")
    code, output = run_predict("--model", model_path, tmp_path)
    lines = output.splitlines()
    assert code == 1 and len(lines) == 5
    assert lines[0].startswith(f"{tmp_path / '0.png'}: {expected[0]}  (") and lines[2].startswith(
        f"{tmp_path / '1b.png'}: error: "
    )
    assert lines[4] == "error: 1 of 4 inputs could not be classified (their lines above say why): fix or remove them"
    code, output = run_predict("--model", model_path, "--json", tmp_path)
    results = json.loads(output[: output.rindex("]") + 1])
    assert code == 1 and [("error" in r) for r in results] == [False, False, True, False]
