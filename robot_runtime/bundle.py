"""Contract 2, the model bundle: what the workstation ships and the robot runs.

A bundle is a directory with `manifest.json` and `policy.onnx` (optionally
`value.onnx`, a chunk critic Q(observation, action chunk) that lets the robot rank
sampled candidate chunks; listed in `files` like every file, so the manifest's
sha256 covers it). The manifest says what the policy reads (cameras and sizes, named
state entries, the task instructions it knows), what it writes (named actions,
bounds, chunk length, control rate), the normalization applied around the graph,
its advantage conditioning, the camera calibration it was trained with (version, intrinsics sha256 and
preprocessing per camera; older bundles have none), and the sha256 of every file. `load_bundle` refuses
anything that disagrees, naming the file and the problem.

The ONNX graph works in normalized units. Its signature is defined once, by
`Manifest.graph_inputs()` and `graph_outputs()`: the exporter traces and
parity-checks it, the runtime feeds it and `load_bundle` checks a graph against
it, all by input name, so the conditioning mode and real-time chunking decide
the inputs in one place; `value_inputs()` / `value_outputs()` do the same for the critic.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_runtime.files import UnsafeNameError, check_name, fsync_path, fsync_tree, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
POLICY_FILE = "policy.onnx"
VALUE_FILE = "value.onnx"
CONDITIONING_MODES = ("none", "advantage")
BATCH = "B"  # the batch axis in a GraphTensor shape; a graph may name its symbolic batch dim anything
_NUMPY_TYPES = {"uint8": np.uint8, "float": np.float32, "int64": np.int64}


@dataclass(frozen=True)
class ManifestLimits:
    """Upper bounds a robot accepts, checked before anything is allocated for a bundle: a manifest that
    declares a 100000x100000 camera or a chunk of 10^9 actions is refused, not run out of memory."""

    max_cameras: int = 16
    max_image_side: int = 4096
    max_names: int = 4096             # state entries, action names
    max_tasks: int = 100_000
    max_chunk_length: int = 4096
    max_denoising_steps: int = 1000
    max_control_rate_hz: float = 2000.0
    max_input_bytes: int = 256 << 20  # one observation's graph inputs at batch 1
    max_manifest_bytes: int = 16 << 20


DEFAULT_LIMITS = ManifestLimits()


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
    calibration: dict = field(default_factory=dict)  # camera -> what it was trained with (calibration.records)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: Path | str = MANIFEST, limits: ManifestLimits = DEFAULT_LIMITS) -> Manifest:
        """Parse and fully check a manifest's JSON: every field typed, named safely and within `limits`."""
        if not isinstance(data, dict):
            raise BundleError(source, "top level must be a JSON object")
        version = data.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:
            raise BundleError(source, f"schema_version {version!r}; this runtime reads {SCHEMA_VERSION}")
        missing = [name for name, f in cls.__dataclass_fields__.items()
                   if name not in data and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise BundleError(source, f"missing field(s) {missing}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__), key=str)
        if unknown:
            raise BundleError(source, f"unknown field(s) {unknown}; written by a newer exporter?")
        fields = {name: _typed(value, cls.__dataclass_fields__[name].type, name, source)
                  for name, value in data.items()}
        manifest = cls(**fields)
        manifest.validate(source, limits)
        return manifest

    def validate(self, source: Path | str = MANIFEST, limits: ManifestLimits = DEFAULT_LIMITS) -> None:
        """Check internal consistency and sizes; raises BundleError naming the field."""
        s, a = len(self.state_names), len(self.action_names)
        _check_sizes(self, source, limits)
        checks = [
            (s > 0, "state_names is empty"),
            (a > 0, "action_names is empty"),
            (len(set(self.state_names)) == s, "state_names has duplicates"),
            (len(self.action_low) == a and len(self.action_high) == a,
             f"action_low/action_high need {a} entries (one per action name)"),
            (all(lo < hi for lo, hi in zip(self.action_low, self.action_high)), "action_low must be < action_high"),
            (self.chunk_length >= 1, "chunk_length must be >= 1"),
            (self.denoising_steps >= 1, "denoising_steps must be >= 1"),
            (self.control_rate_hz > 0, "control_rate_hz must be > 0"),
            (np.isfinite(self.beta) and self.beta >= 0, f"beta {self.beta} must be a finite number >= 0"),
            (len(set(self.action_names)) == a, "action_names has duplicates"),
            (len({c.name for c in self.cameras}) == len(self.cameras), "two cameras share a name"),
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
            (set(self.calibration) <= {c.name for c in self.cameras},
             f"calibration names camera(s) {sorted(set(self.calibration) - {c.name for c in self.cameras})} "
             "that the manifest does not list"),
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

    @property
    def has_value(self) -> bool:
        return VALUE_FILE in self.files

    def value_inputs(self) -> tuple[GraphTensor, ...]:
        """The chunk critic's inputs: the policy's observation inputs and a candidate chunk, in trace order."""
        observation = [t for t in self.graph_inputs() if t.camera or t.name in ("state", "task")]
        return (*observation, GraphTensor("actions", (BATCH, self.chunk_length, len(self.action_names)), "float",
                                          "a candidate action chunk, normalized (the policy's output)"))

    def value_outputs(self) -> tuple[GraphTensor, ...]:
        return (GraphTensor("q", (BATCH,), "float", "expected normalized return of executing the chunk"),)


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def policy_path(self) -> Path:
        return self.path / POLICY_FILE

    @property
    def value_path(self) -> Path | None:
        """The chunk critic, or None when the bundle carries none."""
        return self.path / VALUE_FILE if self.manifest.has_value else None

    @property
    def label(self) -> str:
        return f"{self.manifest.model_id}@{self.manifest.version}"


def _check_onnx_signature(path: Path, inputs: tuple[GraphTensor, ...], outputs: tuple[GraphTensor, ...]) -> None:
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

    for kind, actual, tensors in (("input", signature(model.graph.input), inputs),
                                  ("output", signature(model.graph.output), outputs)):
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


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _number(value, where: str, source) -> float:
    try:
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
    except OverflowError:  # an integer beyond any float
        pass
    raise BundleError(source, f"{where} must be a finite number, got {value!r:.80}")


def _integer(value, where: str, source) -> int:
    if type(value) is not int:
        raise BundleError(source, f"{where} must be an integer, got {value!r:.80}")
    return value


def _string(value, where: str, source) -> str:
    if type(value) is not str:
        raise BundleError(source, f"{where} must be a string, got {value!r:.80}")
    return value


def _list(value, where: str, source, item) -> list:
    if type(value) is not list:
        raise BundleError(source, f"{where} must be a list, got {value!r:.80}")
    return [item(v, f"{where}[{i}]", source) for i, v in enumerate(value)]


def _object(value, where: str, source) -> dict:
    if type(value) is not dict:
        raise BundleError(source, f"{where} must be an object, got {value!r:.80}")
    return value


def _safe(value, where: str, source) -> str:
    try:
        return check_name(value, where)
    except UnsafeNameError as err:
        raise BundleError(source, str(err)) from None


def _record(value, where: str, source, cls):
    """A nested dataclass (Camera, Normalization) from its JSON object, each field typed."""
    data = _object(value, where, source)
    names = set(cls.__dataclass_fields__)
    if set(data) != names:
        raise BundleError(source, f"{where} needs exactly the fields {sorted(names)}, got {sorted(data, key=str)}")
    return cls(**{k: _typed(v, cls.__dataclass_fields__[k].type, f"{where}.{k}", source) for k, v in data.items()})


_KINDS = {  # a manifest field's annotation -> how its JSON value is checked
    "str": _string, "int": _integer, "float": _number,
    "bool": lambda v, w, s: v if type(v) is bool else _refuse(w, "true or false", v, s),
    "list[str]": lambda v, w, s: _list(v, w, s, _string),
    "list[float]": lambda v, w, s: _list(v, w, s, _number),
    "list[Camera]": lambda v, w, s: _list(v, w, s, lambda c, wc, sc: _record(c, wc, sc, Camera)),
    "Normalization": lambda v, w, s: _record(v, w, s, Normalization),
    "dict[str, str]": lambda v, w, s: {_string(k, f"{w} key", s): _string(x, f"{w}[{k!r}]", s)
                                       for k, x in _object(v, w, s).items()},
    "dict": _object,
}
_NAMED = {"model_id", "version"}  # with each camera's name, they become paths, topics and graph input names


def _refuse(where: str, expected: str, value, source):
    raise BundleError(source, f"{where} must be {expected}, got {value!r:.80}")


def _typed(value, annotation: str, where: str, source):
    value = _KINDS[annotation](value, where, source)
    if where in _NAMED or (where.startswith("cameras[") and where.endswith("].name")):
        _safe(value, where, source)
    return value


def _check_sizes(m: Manifest, source, limits: ManifestLimits) -> None:
    """Every size against `limits`, then the bytes one observation's inputs would take: before any allocation."""
    bounds = [("cameras", len(m.cameras), limits.max_cameras), ("state_names", len(m.state_names), limits.max_names),
              ("action_names", len(m.action_names), limits.max_names), ("tasks", len(m.tasks), limits.max_tasks),
              ("chunk_length", m.chunk_length, limits.max_chunk_length),
              ("denoising_steps", m.denoising_steps, limits.max_denoising_steps),
              ("control_rate_hz", m.control_rate_hz, limits.max_control_rate_hz)]
    bounds += [(f"camera '{c.name}' side", max(c.height, c.width), limits.max_image_side) for c in m.cameras]
    for what, value, bound in bounds:
        if value > bound:
            raise BundleError(source, f"{what} is {value}, above this robot's limit of {bound} (ManifestLimits)")
    total = sum(int(np.prod(t.shape_for(1))) * t.dtype.itemsize for t in m.graph_inputs())
    if total > limits.max_input_bytes:
        raise BundleError(source, f"one observation's graph inputs take {total} bytes, above the limit of "
                                  f"{limits.max_input_bytes} (ManifestLimits.max_input_bytes)")


def load_bundle(path: str | Path, limits: ManifestLimits = DEFAULT_LIMITS) -> Bundle:
    """Load and fully validate a bundle directory. Raises BundleError naming the bad file."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(path, "bundle directory does not exist")
    try:
        if manifest_path.stat().st_size > limits.max_manifest_bytes:
            raise BundleError(manifest_path, f"larger than {limits.max_manifest_bytes} bytes")
        data = json.loads(manifest_path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise BundleError(manifest_path, "missing") from None
    except json.JSONDecodeError as err:
        raise BundleError(manifest_path, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise BundleError(manifest_path, f"not UTF-8 text ({err})") from None
    except (RecursionError, ValueError) as err:
        raise BundleError(manifest_path, f"not a manifest ({err or 'nested too deeply'})") from None
    manifest = Manifest.from_json(data, manifest_path, limits)
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
    _check_onnx_signature(path / POLICY_FILE, manifest.graph_inputs(), manifest.graph_outputs())
    if manifest.has_value:
        _check_onnx_signature(path / VALUE_FILE, manifest.value_inputs(), manifest.value_outputs())
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
