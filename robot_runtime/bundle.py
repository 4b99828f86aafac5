"""Contract 2, the model bundle: what the workstation ships and the robot runs.

A bundle is a directory with `manifest.json` and `policy.onnx` (optionally
`value.onnx`). The manifest says what the policy reads (cameras and sizes, named
state entries, the task instructions it knows), what it writes (named actions,
bounds, chunk length, control rate), the normalization applied around the graph,
its advantage conditioning, and the sha256 of every file. `load_bundle` refuses
anything that disagrees, naming the file and the problem.

The ONNX graph works in normalized units. Its signature is defined once, by
`Manifest.graph_inputs()` and `graph_outputs()`: the exporter traces and
parity-checks it, the runtime feeds it and `load_bundle` checks a graph against
it, all by input name, so the conditioning mode and real-time chunking decide
the inputs in one place.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_runtime.files import fsync_path, fsync_tree, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
POLICY_FILE = "policy.onnx"
CONDITIONING_MODES = ("none", "advantage")
BATCH = "B"  # the batch axis in a GraphTensor shape; a graph may name its symbolic batch dim anything
_NUMPY_TYPES = {"uint8": np.uint8, "float": np.float32, "int64": np.int64}


class BundleError(Exception):
    """A bundle that must not be run. `file` names the offending file."""

    def __init__(self, file: Path | str, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = str(file)
        self.problem = problem


@dataclass(frozen=True)
class Camera:
    name: str
    height: int
    width: int


@dataclass(frozen=True)
class GraphTensor:
    """One input or output of the policy graph: its ONNX name, shape (BATCH for the batch
    axis), ONNX element type, what it carries, and for an image the camera it comes from."""

    name: str
    shape: tuple[int | str, ...]
    elem: str
    about: str
    camera: str = ""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_TYPES[self.elem])

    def shape_for(self, batch: int) -> tuple[int, ...]:
        """The shape of a concrete tensor with `batch` rows."""
        return tuple(batch if d == BATCH else d for d in self.shape)


@dataclass
class Normalization:
    state_mean: list[float]
    state_std: list[float]
    action_mean: list[float]
    action_std: list[float]


@dataclass
class Manifest:
    model_id: str
    version: str
    cameras: list[Camera]
    state_names: list[str]
    action_names: list[str]
    action_low: list[float]
    action_high: list[float]
    chunk_length: int
    control_rate_hz: float
    tasks: list[str]
    normalization: Normalization
    conditioning_mode: str = "none"
    beta: float = 1.0
    denoising_steps: int = 10
    realtime_chunking: bool = False
    created_at: str = ""
    parent_version: str = ""
    files: dict[str, str] = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: Path | str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError(source, "top level must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(source, f"schema_version {version!r}; this runtime reads {SCHEMA_VERSION}")
        missing = [name for name, f in cls.__dataclass_fields__.items()
                   if name not in data and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise BundleError(source, f"missing field(s) {missing}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise BundleError(source, f"unknown field(s) {unknown}; written by a newer exporter?")
        try:
            fields = dict(data)
            fields["cameras"] = [Camera(**c) for c in data["cameras"]]
            fields["normalization"] = Normalization(**data["normalization"])
            manifest = cls(**fields)
        except TypeError as err:
            raise BundleError(source, f"malformed field: {err}") from None
        manifest.validate(source)
        return manifest

    def validate(self, source: Path | str = MANIFEST) -> None:
        """Check internal consistency; raises BundleError naming the field."""
        s, a = len(self.state_names), len(self.action_names)
        checks = [
            (s > 0, "state_names is empty"),
            (a > 0, "action_names is empty"),
            (len(set(self.state_names)) == s, "state_names has duplicates"),
            (len(self.action_low) == a and len(self.action_high) == a,
             f"action_low/action_high need {a} entries (one per action name)"),
            (all(lo < hi for lo, hi in zip(self.action_low, self.action_high)), "action_low must be < action_high"),
            (self.chunk_length >= 1, "chunk_length must be >= 1"),
            (self.control_rate_hz > 0, "control_rate_hz must be > 0"),
            (len(self.tasks) >= 1, "tasks is empty: the policy needs at least one instruction"),
            (self.conditioning_mode in CONDITIONING_MODES,
             f"conditioning_mode '{self.conditioning_mode}' not in {CONDITIONING_MODES}"),
            (len(self.normalization.state_mean) == s and len(self.normalization.state_std) == s,
             f"normalization.state_mean/std need {s} entries"),
            (len(self.normalization.action_mean) == a and len(self.normalization.action_std) == a,
             f"normalization.action_mean/std need {a} entries"),
            (all(x > 0 for x in self.normalization.state_std + self.normalization.action_std),
             "normalization std entries must be > 0"),
            (POLICY_FILE in self.files, f"files has no sha256 for {POLICY_FILE}"),
        ]
        for ok, problem in checks:
            if not ok:
                raise BundleError(source, problem)
        for cam in self.cameras:
            if cam.height <= 0 or cam.width <= 0:
                raise BundleError(source, f"camera '{cam.name}' has size {cam.height}x{cam.width}")
        numbers = self.normalization.state_mean + self.normalization.state_std + \
            self.normalization.action_mean + self.normalization.action_std + self.action_low + self.action_high
        if not np.all(np.isfinite(numbers)):
            raise BundleError(source, "normalization or action bounds contain NaN or inf")

    def graph_inputs(self) -> tuple[GraphTensor, ...]:
        """The policy graph's inputs, in the order the exporter traces them."""
        chunk = (BATCH, self.chunk_length, len(self.action_names))
        inputs = [GraphTensor(f"image_{c.name}", (BATCH, c.height, c.width, 3), "uint8", "rgb8 frame", c.name)
                  for c in self.cameras]
        inputs += [GraphTensor("state", (BATCH, len(self.state_names)), "float", "state, normalized"),
                   GraphTensor("task", (BATCH,), "int64", "index into tasks"),
                   GraphTensor("noise", chunk, "float", "flow-matching start point, drawn by the runtime")]
        if self.conditioning_mode == "advantage":
            inputs.append(GraphTensor("beta", (), "float", "CFG weight of the advantage conditioning"))
        if self.realtime_chunking:
            inputs += [GraphTensor("prefix", chunk, "float", "actions already committed for the chunk's "
                                                             "first ticks, normalized"),
                       GraphTensor("prefix_weights", chunk[:2], "float", "how firmly to keep each "
                                                                         "prefix action, 0 (free) to 1")]
        return tuple(inputs)

    def graph_outputs(self) -> tuple[GraphTensor, ...]:
        return (GraphTensor("actions", (BATCH, self.chunk_length, len(self.action_names)), "float",
                            "the action chunk, normalized"),)


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def policy_path(self) -> Path:
        return self.path / POLICY_FILE

    @property
    def label(self) -> str:
        return f"{self.manifest.model_id}@{self.manifest.version}"


def _check_onnx_signature(path: Path, manifest: Manifest) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others for corrupt protobufs
        raise BundleError(path, f"not a readable ONNX model ({type(err).__name__}: {err})") from None
    elem_names = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT: "float", onnx.TensorProto.INT64: "int64"}
    initializers = {init.name for init in model.graph.initializer}

    def signature(values) -> dict[str, tuple[list, str]]:
        sig = {}
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else BATCH for d in t.shape.dim]
            sig[v.name] = (dims, elem_names.get(t.elem_type, str(t.elem_type)))
        return sig

    for kind, actual, tensors in (("input", signature(model.graph.input), manifest.graph_inputs()),
                                  ("output", signature(model.graph.output), manifest.graph_outputs())):
        expected = {t.name: t for t in tensors}
        for name in sorted(set(expected) | set(actual)):
            if name not in actual:
                want = expected[name]
                raise BundleError(path, f"graph has no {kind} '{name}' ({want.about}) that the manifest implies "
                                        f"{want.elem}{list(want.shape)}")
            if name not in expected:
                raise BundleError(path, f"graph {kind} '{name}' is not described by the manifest")
            (got_shape, got_type), want = actual[name], expected[name]
            # A symbolic batch dim may be named anything; fixed dims must match exactly.
            got_fixed = tuple(d if isinstance(d, int) and d > 0 else BATCH for d in got_shape)
            if got_type != want.elem or got_fixed != want.shape:
                raise BundleError(path, f"{kind} '{name}' is {got_type}{got_shape}, "
                                        f"the manifest implies {want.elem}{list(want.shape)}")


def load_bundle(path: str | Path) -> Bundle:
    """Load and fully validate a bundle directory. Raises BundleError naming the bad file."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(path, "bundle directory does not exist")
    try:
        data = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(manifest_path, "missing") from None
    except json.JSONDecodeError as err:
        raise BundleError(manifest_path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise BundleError(manifest_path, f"not UTF-8 text ({err})") from None
    manifest = Manifest.from_json(data, manifest_path)
    for name, expected in manifest.files.items():
        file = path / name
        if Path(name).name != name:
            raise BundleError(manifest_path, f"file name '{name}' must not contain a directory")
        if not file.is_file():
            raise BundleError(file, "listed in the manifest but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(file, f"sha256 mismatch: manifest says {expected[:12]}..., file is {actual[:12]}...; "
                                    "the file is corrupt or was changed after export")
    _check_onnx_signature(path / POLICY_FILE, manifest)
    return Bundle(path, manifest)


def write_bundle(path: str | Path, manifest: Manifest, files: dict[str, Path]) -> Bundle:
    """Copy `files` (name -> source path) into a new bundle directory with their sha256.

    Written into a temporary sibling, flushed to disk and renamed, so a half-written
    bundle is never mistaken for a whole one, even after a power cut.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest.files = {}
    for name, source in files.items():
        shutil.copyfile(source, tmp / name)
        manifest.files[name] = sha256_file(tmp / name)
    manifest.validate(tmp / MANIFEST)
    (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1))
    fsync_tree(tmp)
    if path.exists():
        raise BundleError(path, "already exists; bundles are immutable, use a new version")
    tmp.rename(path)
    fsync_path(path.parent)
    return load_bundle(path)
