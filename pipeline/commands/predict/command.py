"""`python -m pipeline predict IMAGE...`: classify photos or drawings of digits with the trained model.

Images (PNG, JPEG, BMP, ...) of any size, colour or greyscale, dark-on-light
or light-on-dark, are turned into MNIST-style 28x28 digits first. IDX files
(MNIST format, gzipped or not) are already digits. A folder means every
image file in it. An input that cannot be read gets its own error line and the
others are still classified; the exit status is then 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from pipeline.commands.predict.digitize import read_image, to_mnist
from pipeline.lib.cli import PATH, user_command
from pipeline.lib.errors import PipelineError
from pipeline.lib.layout import stage_path
from pipeline.lib.mnist import read_idx
from pipeline.lib.model import probabilities
from pipeline.lib.model_file import load_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TOP = 3


def is_idx(path: Path) -> bool:
    return "idx3-ubyte" in path.name or path.suffix == ".idx"


def collect(paths: tuple[Path, ...]) -> list[tuple[str, np.ndarray | PipelineError]]:
    """(name, uint8 28x28 digit, or why it could not be read) for every image, IDX entry and
    image in a folder, in order."""
    digits: list[tuple[str, np.ndarray | PipelineError]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES or is_idx(p))
            if not files:
                digits.append(
                    (
                        str(path),
                        PipelineError(f"{path} holds no image or IDX files: pass a folder of PNG, JPEG or BMP files"),
                    )
                )
            digits.extend(collect(tuple(files)))
            continue
        try:
            if is_idx(path):
                digits.extend((f"{path}[{i}]", image) for i, image in enumerate(read_idx(path, dimensions=3)))
            else:
                digits.append((str(path), to_mnist(read_image(path), name=str(path))))
        except PipelineError as error:
            digits.append((str(path), error))
    return digits


def line(result: dict) -> str:
    """One input's result as a line: the digit and the top probabilities, or why it failed."""
    if "error" in result:
        return f"{result['input']}: error: {result['error']}"
    alternatives = ", ".join(f"{t['digit']} {t['probability']:.1%}" for t in result["top"])
    return f"{result['input']}: {result['digit']}  ({alternatives})"


def predict(model_path: Path | None, paths: tuple[Path, ...], as_json: bool, batch_size: int = 4096) -> None:
    model = load_model(model_path or stage_path("train", "--model"))
    digits = collect(paths)
    failed = [(name, error) for name, error in digits if isinstance(error, PipelineError)]
    if len(digits) == 1 and failed:
        raise failed[0][1]
    readable = [(name, image) for name, image in digits if isinstance(image, np.ndarray)]
    probs = (
        probabilities(model.network, model.normalization.apply(np.stack([image for _, image in readable])), batch_size)
        if readable
        else []
    )
    classified = dict(zip((name for name, _ in readable), probs))
    results = []
    for name, image in digits:
        if isinstance(image, PipelineError):
            results.append({"input": name, "error": str(image)})
            continue
        row = classified[name]
        best = np.argsort(-row, kind="stable")[:TOP]
        top = [{"digit": model.class_names[i], "probability": round(float(row[i]), 4)} for i in best]
        results.append({"input": name, "digit": top[0]["digit"], "top": top})
    click.echo(json.dumps(results, indent=2) if as_json else "\n".join(map(line, results)))
    if failed:
        raise PipelineError(
            f"{len(failed)} of {len(digits)} inputs could not be classified (their lines above say "
            "why): fix or remove them"
        )


@user_command()
@click.argument("inputs", nargs=-1, required=True, type=PATH)
@click.option(
    "--model", "model_path", type=PATH, help="Model file  [default: what the train stage writes, per dvc.yaml]"
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: input, digit and top-3 probabilities.")
def main(inputs: tuple[Path, ...], model_path: Path, as_json: bool) -> None:
    """Print the digit and top-3 probabilities for each image, IDX file or folder in INPUTS."""
    predict(model_path, inputs, as_json)
