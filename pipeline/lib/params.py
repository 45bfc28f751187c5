"""params.yaml as typed, validated objects.

The file is loaded and checked once, before any stage does work: an unknown
key, a wrong type or an out-of-range value becomes one ParamsError line that
names the key and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.lib.errors import PipelineError

DEFAULT_PARAMS = Path("params.yaml")
# What the hand-written backward pass (pipeline/lib/backprop.py) covers: a stack of Linear,
# one of these activations and Dropout, under plain cross-entropy.
MANUAL_BACKWARD_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")


class ParamsError(PipelineError):
    """params.yaml is unreadable or does not validate."""


class Section(BaseModel):
    # strict: YAML's "0.1" (a string) or "yes" (a bool) is never silently coerced.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Preprocess(Section):
    normalization: Literal["standard", "per_pixel", "unit", "centered", "raw"] = Field(
        description=(
            "`standard`: one mean and std over all training pixels; `per_pixel`: a mean and std per "
            "pixel; `unit`: pixel / 255 only; `centered`: (pixel / 255 - 0.5) / 0.5, in [-1, 1], as "
            "`Normalize((0.5,), (0.5,))` does; `raw`: the pixel values 0-255 as they are"
        )
    )
    std_floor: float = Field(
        gt=0, description="`per_pixel` only: the smallest std allowed (border pixels are nearly constant)"
    )


class Split(Section):
    val_fraction: float = Field(
        ge=0,
        lt=1,
        description=(
            "share of the official training set held out for validation; 0: train on all 60,000 images with no "
            "validation set (then train.keep must be `last` and early stopping off)"
        ),
    )
    holdout: Literal["stratified", "last"] = Field(
        description=(
            "`stratified`: a seeded draw that keeps each digit's share; `last`: the last images of the "
            "file, as Keras' `validation_split` takes them (0.2 of 60,000: the last 12,000)"
        )
    )
    train_subset: int | None = Field(
        ge=10, description="train on this many of the training images, e.g. 2000 to study overfitting; null: all"
    )
    subset_draw: Literal["stratified", "first"] = Field(
        description=(
            "how `train_subset` picks its images: `stratified`, a seeded draw that keeps each digit's share; "
            "`first`, the first ones in the file's order, as the CNN assignment takes its 2,000"
        )
    )
    seed: int = Field(description="the split's random seed")


class Model(Section):
    architecture: Literal["mlp", "cnn"] = Field(
        description=(
            "`cnn` puts the CNN assignment's LeNet-style convolutions (conv 1-6 5x5, pool, conv 6-16 5x5,"
            " pool: 256 features) in front of the same head; with `hidden_sizes: [120, 84]` it is that "
            "network"
        )
    )
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        description="units of each hidden layer; `[]` is multinomial logistic regression"
    )
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu"] = Field(
        description="the hidden layers' activation"
    )
    dropout: float = Field(ge=0, lt=1, description="dropout after each hidden activation")
    batch_norm: bool = Field(description="BatchNorm1d after each hidden Linear")
    init: Literal["default", "gaussian", "uniform", "glorot", "kaiming"] = Field(
        description=(
            "`default` keeps PyTorch's; the others zero the biases and draw weights as the NumPy "
            "assignments and Keras do: `glorot` U(±√(6/(fan_in+fan_out))), `kaiming` U(±√(6/fan_in)), "
            "`uniform` U(±1/√fan_in), `gaussian` N(0, init_std)"
        )
    )
    init_std: float = Field(gt=0, description="`gaussian` only: the weights' standard deviation")
    init_gain: float = Field(
        gt=0,
        description=(
            "`glorot` only: multiplies its bound; 4 is Glorot and Bengio's choice for sigmoid units, "
            "whose slope at 0 is 1/4"
        ),
    )

    @model_validator(mode="after")
    def _gain_needs_glorot(self) -> Model:
        if self.init_gain != 1 and self.init != "glorot":
            raise ValueError("init_gain other than 1 needs init: glorot")
        return self


class Optimizer(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = Field(description="the optimizer")
    lr: float = Field(gt=0, description="learning rate (the peak of `onecycle`)")
    momentum: float = Field(ge=0, lt=1, description="`sgd` and `rmsprop` only")
    nesterov: bool = Field(description="`sgd` with momentum > 0 only")
    weight_decay: float = Field(ge=0, description="the optimizer's own weight decay")
    alpha: float = Field(
        gt=0, lt=1, description="`rmsprop` only: the smoothing of its mean squared gradient (Keras calls it rho)"
    )

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> Optimizer:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs name: sgd and momentum > 0")
        return self


class LrSchedule(Section):
    name: Literal["none", "step", "cosine", "onecycle"] = Field(
        description="stepped every batch; `onecycle` peaks at `optimizer.lr`"
    )
    step_size: int = Field(ge=1, description="`step`: epochs between decays")
    gamma: float = Field(gt=0, le=1, description="`step`: the lr is multiplied by this at each decay")
    cycle_momentum: bool = Field(
        description=(
            "`onecycle` only: also cycle the momentum (Adam: beta1) 0.95 -> 0.85 -> 0.95 against the lr, "
            "replacing `optimizer.momentum` while it runs"
        )
    )

    @model_validator(mode="after")
    def _cycling_needs_onecycle(self) -> LrSchedule:
        if self.cycle_momentum and self.name != "onecycle":
            raise ValueError("cycle_momentum: true needs name: onecycle")
        return self


class Augment(Section):
    rotation_degrees: float = Field(
        ge=0, le=180, description="per training image, a rotation uniform in ±r; 0 turns it off"
    )
    shift_pixels: float = Field(ge=0, le=14, description="per training image and axis, a shift uniform in ±s")
    scale: float = Field(ge=0, lt=1, description="per training image, a zoom uniform in [1 - s, 1 + s]")
    elastic_alpha: float = Field(
        ge=0, description="elastic distortion (Simard et al. 2003): largest displacement in pixels; 0 turns it off"
    )
    elastic_sigma: float = Field(gt=0, description="elastic distortion: smoothness in pixels")

    @property
    def enabled(self) -> bool:
        return any((self.rotation_degrees, self.shift_pixels, self.scale, self.elastic_alpha))


class Train(Section):
    seed: int = Field(description="seed of initialization, shuffling and augmentation")
    device: Literal["auto", "cpu", "cuda"] = Field(description="`auto` uses a CUDA GPU when present")
    epochs: int = Field(ge=1, description="passes over the training set")
    batch_size: int = Field(ge=1, description="images per optimizer step")
    backward: Literal["autograd", "manual"] = Field(
        description=(
            "`manual`: the textbook backward pass written out (pipeline/lib/backprop.py), for the `mlp` "
            "with relu, leaky_relu, tanh or sigmoid, dropout, cross-entropy and no l1 or l2; anything "
            "else is refused"
        )
    )
    loss: Literal["cross_entropy", "mse"] = Field(
        description="`mse`: squared error of the softmax against one-hot targets"
    )
    l1: float = Field(ge=0, description="L1 penalty strength on the Linear and Conv2d weights (not biases)")
    l2: float = Field(ge=0, description="L2 penalty strength on the Linear and Conv2d weights (not biases)")
    optimizer: Optimizer
    lr_schedule: LrSchedule
    early_stopping_patience: int | None = Field(
        ge=1, description="stop after this many epochs without a lower validation loss; null: off"
    )
    on_divergence: Literal["stop", "record"] = Field(
        description="`stop`: a diverging run ends with a one-line error and writes no model; `record`: training "
        "ends there, the kept epoch before it is the model, and train's metrics record the epoch, step and loss"
    )
    keep: Literal["best", "last"] = Field(
        description="the epoch whose weights become the model: `best`, the lowest validation loss; `last`, the "
        "last epoch trained, as the source documents report theirs"
    )
    augment: Augment


class Evaluate(Section):
    batch_size: int = Field(ge=1, description="images per inference batch")


class Analyze(Section):
    confused_pairs: int = Field(ge=1, description="how many most-confused (true, predicted) pairs to list")
    gallery_size: int = Field(ge=1, le=100, description="how many of the most confident mistakes to show")
    pca_points: int = Field(ge=10, description="test images in each PCA scatter")


class Params(Section):
    preprocess: Preprocess
    split: Split
    model: Model
    train: Train
    evaluate: Evaluate
    analyze: Analyze

    @model_validator(mode="after")
    def _no_validation_set_needs_no_validation(self) -> Params:
        if self.split.val_fraction > 0:
            return self
        needs = {
            "train.keep: best": self.train.keep == "best",
            "train.early_stopping_patience": self.train.early_stopping_patience is not None,
        }
        if any(needs.values()):
            named = ", ".join(key for key, bad in needs.items() if bad)
            raise ValueError(
                f"split.val_fraction: 0 leaves no validation set, which {named} needs: "
                "set train.keep: last and train.early_stopping_patience: null, or hold out a validation set"
            )
        return self

    @model_validator(mode="after")
    def _manual_backward_covers_the_setup(self) -> Params:
        if self.train.backward == "autograd":
            return self
        unsupported = {
            "model.architecture": self.model.architecture != "mlp",
            "model.activation": self.model.activation not in MANUAL_BACKWARD_ACTIVATIONS,
            "model.batch_norm": self.model.batch_norm,
            "train.loss": self.train.loss != "cross_entropy",
            "train.l1": self.train.l1 > 0,
            "train.l2": self.train.l2 > 0,
        }
        if any(unsupported.values()):
            raise ValueError(
                f"train.backward: manual does not cover {', '.join(key for key, bad in unsupported.items() if bad)} "
                f"(it covers the mlp with activations {', '.join(MANUAL_BACKWARD_ACTIVATIONS)}, "
                "dropout, no batch norm, "
                "cross_entropy with l1 = l2 = 0): set train.backward: autograd"
            )
        return self


class _Loader(yaml.SafeLoader):
    """Two fixes to PyYAML's SafeLoader. YAML 1.1 reads `1e-6` (no dot) as a string: like YAML 1.2,
    read it as the float it means. A key given twice silently keeps the last value: refuse it, as
    DVC does when it reads params.yaml. A merge key (`<<: *anchor`) is not a key given twice: the
    keys written beside it override the anchor's, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # SafeLoader merges it below
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(key, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, mark: yaml.Mark):
        super().__init__(f"duplicate key {key}")
        self.key, self.mark = key, mark


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.[\d_]*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate the whole params file; raise ParamsError on any problem."""
    raw = read_params_file(path)
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{path}: {describe(error.errors()[0])}") from None


def read_params_file(path: Path = DEFAULT_PARAMS) -> dict:
    """The params file as plain YAML values, not yet validated."""
    raw = read_yaml(path, fix="run from the project root or pass --params")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections, like the committed params.yaml")
    return raw


def read_yaml(path: Path, fix: str) -> Any:
    """A YAML file's values; a missing file, a syntax error or a key given twice is one ParamsError
    naming the file (and line), `fix` saying what to do about a missing one."""
    try:
        return yaml.load(Path(path).read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: {fix}") from None
    except DuplicateKey as error:
        raise ParamsError(
            f"{path}: key {error.key!r} appears twice (line {error.mark.line + 1}): keep one of them"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path} is not valid YAML{where}: fix the syntax there") from None


def describe(error: dict) -> str:
    """One pydantic error as 'key: what is wrong (what is allowed)'."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(location)
    if not location:  # a rule across sections names its own keys
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        parent = _section_at(location[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see params.yaml"
        return f"{key}: unknown key (allowed here: {allowed})"
    if error["type"] == "missing":
        return f"{key}: missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {error['input']!r})"


def _section_at(location: list[str]) -> type[Section] | None:
    section: type[Section] = Params
    for part in location:
        field = section.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, Section)):
            return None
        section = field.annotation
    return section
