"""Dynamics models trained by the reference code, read as they are and converted to eor's.

The reference's `save_ensemble_model` (github.com/anyasims/edge-of-reach,
dynamics_training/ensemble.py) writes one folder per run:

    weights.pt   torch.save of {"model_{i}_state_dict": member i's Net state dict
                 (net.fc1 .. net.fc4, net.delta, net.logvar: Linear weight [out, in] and bias),
                 "logvar_max": [D], "logvar_min": [D]}, with D = obs_dim + 1
    data.pkl     pickle of {"train_buffer", "valid_buffer": DataBuffer,
                 "state_filter", "action_filter": MeanStdevFilter, "params": dict,
                 "validation_performance": ndarray}

Its own loader (`load_ensemble_model`, and the agent's `DynamicsModel.load_model`) reads that
pickle under the name `config.pkl`, a name its save never writes: users rename or copy the file.
eor accepts either name: `config.pkl` when it exists (what the reference's loader would read),
else `data.pkl`.

    model = eor.dynamics.load(DIR)            # detects the format, converts on the fly
    eor convert-model DIR OUT                 # the same conversion, saved as an eor model dir

What is read, and how
---------------------
weights.pt goes through `torch.load(weights_only=True)` (tensors and plain containers only).

The pickle is read by a restricted unpickler (`_RestrictedUnpickler`) that imports nothing:
every global the pickle names is looked up in a fixed table, and anything else stops the load
with `UnsafePickleError` naming the module.class, before anything is called. The table:

- builtins `set`, `frozenset`, `bytearray`, `complex`, `object` (the last only for protocol
  0/1 object records), `collections.OrderedDict`, `_codecs.encode` (how protocol 2 stores
  bytes), `copyreg._reconstructor` (protocol 0/1 objects: only for the two stand-ins below);
- numpy arrays, dtypes and scalars: `numpy.ndarray`, `numpy.dtype` (object dtypes refused),
  `multiarray._reconstruct`, `multiarray.scalar` and `numeric._frombuffer`, under both
  `numpy.core` (numpy 1) and `numpy._core` (numpy 2);
- `dynamics_training.ensemble.MeanStdevFilter` and `shared.data_buffer.DataBuffer`: stand-in
  classes that keep the pickled attribute dict and run none of the reference's code;
- placeholders that record a name and ignore their arguments, for parts eor never reads: the
  DataBuffer's numpy random generator (`numpy.random._pickle.__generator_ctor`,
  `__bit_generator_ctor`, `__randomstate_ctor`, the bit generator classes and `SeedSequence`)
  and the filters' torch copies `torch_mean` / `torch_stdev` (`torch._utils._rebuild_tensor*`,
  `torch.storage._load_from_bytes`: their bytes are never parsed, so a filter saved on a GPU
  reads on a CPU).

What eor uses: the filters' `mean`, `stdev` and `clip`; `params` (dims, ensemble sizes, env
name); the validation buffer's first `_size` rows (`_states`, `_actions`, `_rewards`,
`_next_states`); the training buffer's `_size` (recorded only).

The conversion (docs/algorithm.md §2)
-------------------------------------
- Members: member i of eor is the reference's `model_{i}_state_dict`; each layer's weight is
  transposed to eor's `[in, out]` and stacked over members; the head is the `delta` layer's
  outputs then the `logvar` layer's (mean then raw log-variance, as in eor).
- Normaliser: eor's `clip((x − mean)/std, ±10)` over `[obs, act]` is the reference's two
  filters side by side; mean and std are the filters' float64 `mean`/`stdev` rounded to float32
  (what the reference's `torch_mean`/`torch_stdev` hold), and the reference's std floor is
  already inside the stored `stdev`. A clip other than 10 cannot be expressed: refused.
- Log-variance bounds: `logvar_max`, `logvar_min` as they are (the same softplus bounding).
- Elites: what the reference's loader picks. `load_ensemble_model` calls `select_elites` on the
  pickled validation buffer: each member's mean squared error of the predicted means (Δobs and
  reward, the raw network outputs: no output normalisation) against `[next_obs − obs, reward]`,
  averaged over all rows and all D columns, the inputs filtered in float64 by numpy and rounded
  to float32; members ranked by that loss (ascending, NaN last), the first `num_elites` are the
  elites. eor recomputes it in float64 from the float32 weights (`validation_mse`); the
  reference computed it in float32 on its device, so when two losses at the elite boundary lie
  within a relative 1e-5 the reference might have ranked them the other way: the log line and
  `model_info["elite_boundary_gap"]` say so. Note that this buffer is the reference's first
  random split, not the set that its training monitored (it re-splits before training), and the
  pickled `validation_performance` is that other set's loss: recorded, never compared.
  The float64 pass costs about 40 s on a 2-core CPU for 200k validation rows and 7 members of
  width 200 (it runs on the load's device), at every on-the-fly load: `eor convert-model`
  pays it once.
  Without a usable validation buffer (empty, or not numpy), the elites must be given
  (`eor convert-model --elites`); eor never guesses them.
- The step: the reference's sample is `obs + mean_Δ + std·ε` for the obs columns and
  `mean_r + std·ε` for the reward (column obs_dim), one elite drawn uniformly per row, which is
  `DynamicsEnsemble.step`.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from eor.dynamics.io import META, DynamicsLoadError
from eor.dynamics.model import NORMALIZER_CLIP, DynamicsEnsemble
from eor.fileio import sha256_file

log = logging.getLogger(__name__)

FORMAT = "reference"
WEIGHTS = "weights.pt"
PICKLE_NAMES = ("config.pkl", "data.pkl")  # in order of preference (see the module doc)
NEAR_TIE = 1e-5  # relative gap at the elite boundary below which the ranking is uncertain


class ReferenceFormatError(DynamicsLoadError):
    """A reference-format model directory that is missing, incomplete, corrupt or unsupported."""


class UnsafePickleError(ReferenceFormatError):
    """The pickle names a class or function that eor does not unpickle."""


# ----------------------------------------------------------------------------- restricted unpickling


class _StandIn:
    """Base of the stand-ins for the reference's pickled classes: keeps the attribute dict."""

    reference_name = ""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"{self.reference_name}: expected an attribute dict, got {type(state).__name__}"
            )
        self.state = state

    def get(self, key: str, default: Any = None) -> Any:
        # Unpickling makes the object with __new__ (no __init__); an empty state has no BUILD.
        return getattr(self, "state", {}).get(key, default)


class MeanStdevFilterState(_StandIn):
    """Stand-in for `dynamics_training.ensemble.MeanStdevFilter` (its attributes in `.state`)."""

    reference_name = "dynamics_training.ensemble.MeanStdevFilter"


class DataBufferState(_StandIn):
    """Stand-in for `shared.data_buffer.DataBuffer` (its attributes in `.state`)."""

    reference_name = "shared.data_buffer.DataBuffer"


class Skipped:
    """A placeholder for a pickled object eor never reads (a random generator, a torch copy).

    Calling it (with any arguments) gives another placeholder; its state is dropped.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Skipped:
        return Skipped(self.name)

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"Skipped({self.name!r})"


def _dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError("the pickle holds a numpy array of Python objects (dtype object)")
    return dt


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (protocol 0/1 objects), for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not object:
        raise UnsafePickleError(
            "copyreg._reconstructor is only accepted for the reference's MeanStdevFilter and "
            f"DataBuffer, got {cls!r}"
        )
    return cls()


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """_codecs.encode as protocol 2 uses it for bytes: (str, "latin1")."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError(
            f"_codecs.encode is only accepted for str, got {type(text).__name__}"
        )
    return text.encode(encoding)


_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_NP_SCALAR = np.float64(0).__reduce__()[0]
_NP_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]

_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "object"): object,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("dynamics_training.ensemble", "MeanStdevFilter"): MeanStdevFilterState,
    ("shared.data_buffer", "DataBuffer"): DataBufferState,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _NP_RECONSTRUCT
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _NP_SCALAR
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _NP_FROMBUFFER
_SKIPPED = {
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random._bit_generator", "SeedSequence"),
    ("numpy.random._bit_generator", "__pyx_unpickle_SeedSequence"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.storage", "_load_from_bytes"),
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals only from `_ALLOWED` / `_SKIPPED`; anything else is UnsafePickleError."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) in _SKIPPED:
            return Skipped(f"{module}.{name}")
        raise UnsafePickleError(
            f"the pickle names {module}.{name}, which eor does not unpickle (it reads only "
            "numpy arrays, plain containers and the reference's MeanStdevFilter and DataBuffer; "
            "see eor/dynamics/reference_format.py)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"the pickle holds a persistent id {pid!r}, which eor does not read"
        )


def restricted_load(data: bytes | BinaryIO) -> Any:
    """Unpickle `data` (bytes or a binary file) with the restricted table (see the module doc)."""
    return _RestrictedUnpickler(io.BytesIO(data) if isinstance(data, bytes) else data).load()


# ----------------------------------------------------------------------------- reading


@dataclass
class ReferenceModel:
    """What a reference model directory holds, as plain arrays (float32 weights on the CPU)."""

    source_dir: Path
    pickle_name: str
    params: dict[str, Any]
    obs_dim: int
    act_dim: int
    hidden_dim: int
    num_hidden: int
    num_elites: int
    members: list[list[tuple[torch.Tensor, torch.Tensor]]]  # [E][layer] (weight [out, in], bias)
    max_logvar: torch.Tensor
    min_logvar: torch.Tensor
    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    val: dict[str, np.ndarray] | None  # states, actions, rewards [N, 1], next_states
    val_problem: str | None  # why `val` is None
    n_train: int | None
    validation_performance: list[float] | None
    weights_sha256: str
    pickle_sha256: str
    env_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_members(self) -> int:
        return len(self.members)


def is_reference_dir(path: str | Path) -> bool:
    """A directory with no eor meta.json but a reference file (weights.pt, config.pkl, data.pkl)."""
    path = Path(path)
    if not path.is_dir() or (path / META).exists():
        return False
    return any((path / name).exists() for name in (WEIGHTS, *PICKLE_NAMES))


def pickle_path(path: str | Path) -> Path:
    """The pickle eor reads: config.pkl if present (the reference loader's name), else data.pkl."""
    path = Path(path)
    for name in PICKLE_NAMES:
        if (path / name).is_file():
            return path / name
    raise ReferenceFormatError(
        f"{str(path)!r} has no data.pkl or config.pkl: a reference model directory holds "
        "weights.pt and the pickle that save_ensemble_model writes as data.pkl (its loader "
        "reads it as config.pkl; eor accepts either)"
    )


def read_reference_dir(path: str | Path) -> ReferenceModel:
    """Read a reference model directory (ReferenceFormatError naming the file on any problem)."""
    path = Path(path)
    if not path.is_dir():
        raise ReferenceFormatError(f"model directory {str(path)!r} does not exist")
    weights_file = path / WEIGHTS
    if not weights_file.is_file():
        raise ReferenceFormatError(
            f"{str(path)!r} is incomplete: {WEIGHTS} is missing (a reference model directory "
            "holds weights.pt and data.pkl or config.pkl)"
        )
    pkl = pickle_path(path)
    data = _read_pickle(pkl)
    params = _params(data, pkl)
    try:
        weights = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means a bad file
        raise ReferenceFormatError(
            f"{str(weights_file)!r} is corrupt or not a torch file: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(weights, dict):
        raise ReferenceFormatError(
            f"{str(weights_file)!r} holds a {type(weights).__name__}, expected the dict that "
            "save_ensemble_model writes"
        )
    obs_dim, act_dim = params["ob_dim"], params["ac_dim"]
    members, hidden_dim, num_hidden = _members(weights, weights_file, params)
    d = obs_dim + 1
    bounds = []
    for key in ("logvar_max", "logvar_min"):
        t = weights.get(key)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (d,):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ReferenceFormatError(
                f"{str(weights_file)!r}: {key} must be a tensor of shape ({d},) (obs_dim + 1), got {got}"
            )
        bounds.append(t.detach().to(torch.float32).clone())
    s_mean, s_std = _filter(data, "state_filter", obs_dim, pkl)
    a_mean, a_std = _filter(data, "action_filter", act_dim, pkl)
    val, val_problem = _val_rows(data.get("valid_buffer"), obs_dim, act_dim)
    train = data.get("train_buffer")
    n_train = train.get("_size") if isinstance(train, DataBufferState) else None
    perf = data.get("validation_performance")
    return ReferenceModel(
        source_dir=path,
        pickle_name=pkl.name,
        params=params,
        obs_dim=obs_dim,
        act_dim=act_dim,
        hidden_dim=hidden_dim,
        num_hidden=num_hidden,
        num_elites=params["num_elites"],
        members=members,
        max_logvar=bounds[0],
        min_logvar=bounds[1],
        state_mean=s_mean,
        state_std=s_std,
        action_mean=a_mean,
        action_std=a_std,
        val=val,
        val_problem=val_problem,
        n_train=int(n_train) if isinstance(n_train, int | np.integer) else None,
        validation_performance=(
            [float(v) for v in np.asarray(perf, dtype=np.float64).ravel()]
            if isinstance(perf, np.ndarray) and perf.dtype.kind == "f"
            else None
        ),
        weights_sha256=sha256_file(weights_file),
        pickle_sha256=sha256_file(pkl),
        env_name=str(params["env_name"]),
    )


def _read_pickle(pkl: Path) -> dict[str, Any]:
    try:
        with open(pkl, "rb") as f:  # streamed: the pickle holds both buffers (~0.4 GB)
            data = restricted_load(f)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{str(pkl)!r} was not read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt: any failure
        raise ReferenceFormatError(
            f"{str(pkl)!r} is corrupt or truncated: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ReferenceFormatError(
            f"{str(pkl)!r} holds a {type(data).__name__}, expected the dict that "
            "save_ensemble_model writes"
        )
    missing = [k for k in ("params", "state_filter", "action_filter") if k not in data]
    if missing:
        raise ReferenceFormatError(f"{str(pkl)!r} lacks {missing} (not a reference model pickle?)")
    return data


def _params(data: dict[str, Any], pkl: Path) -> dict[str, Any]:
    params = data["params"]
    if not isinstance(params, dict):
        raise ReferenceFormatError(f"{str(pkl)!r}: params must be a dict")
    for key in ("ob_dim", "ac_dim", "num_models", "num_elites"):
        value = params.get(key)
        if not isinstance(value, int | np.integer) or value < 1:
            raise ReferenceFormatError(
                f"{str(pkl)!r}: params[{key!r}] must be a positive integer, got {value!r}"
            )
        params[key] = int(value)
    if params["num_elites"] > params["num_models"]:
        raise ReferenceFormatError(
            f"{str(pkl)!r}: params num_elites={params['num_elites']} exceeds "
            f"num_models={params['num_models']}"
        )
    if not isinstance(params.get("env_name"), str):
        raise ReferenceFormatError(f"{str(pkl)!r}: params['env_name'] must be a string")
    return params


_LAYER = re.compile(r"^net\.(fc(\d+)|delta|logvar)\.(weight|bias)$")


def _members(
    weights: dict[str, Any], file: Path, params: dict[str, Any]
) -> tuple[list[list[tuple[torch.Tensor, torch.Tensor]]], int, int]:
    """Each member's layers (weight [out, in], bias [out]): fc1..fcK then the two heads."""
    n = params["num_models"]
    keys = sorted(k for k in weights if k.startswith("model_"))
    expected = [f"model_{i}_state_dict" for i in range(n)]
    if sorted(expected) != keys:
        raise ReferenceFormatError(
            f"{str(file)!r} holds members {keys}, but params num_models={n} needs {expected}"
        )
    s, a, d = params["ob_dim"], params["ac_dim"], params["ob_dim"] + 1
    members = []
    shape0: tuple[int, int] | None = None
    for i, key in enumerate(expected):
        sd = weights[key]
        if sd is None:
            raise ReferenceFormatError(
                f"{str(file)!r}: member {i} has no weights ({key} is None: the reference saves "
                "None for a member whose validation loss never improved, e.g. NaN)"
            )
        if not isinstance(sd, dict):
            raise ReferenceFormatError(f"{str(file)!r}: {key} is not a state dict")
        bad = [k for k in sd if not _LAYER.match(k)]
        if bad:
            raise ReferenceFormatError(
                f"{str(file)!r}: {key} has unexpected parameters {bad} (expected net.fc1 .. "
                "net.fcK, net.delta and net.logvar weights and biases)"
            )
        k_hidden = len({m.group(2) for k in sd if (m := _LAYER.match(k)) and m.group(2)})
        names = [f"fc{j}" for j in range(1, k_hidden + 1)] + ["delta", "logvar"]
        layers = []
        for name in names:
            w, b = sd.get(f"net.{name}.weight"), sd.get(f"net.{name}.bias")
            if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
                raise ReferenceFormatError(f"{str(file)!r}: {key} lacks net.{name} weight or bias")
            if w.dim() != 2 or b.shape != (w.shape[0],):
                raise ReferenceFormatError(
                    f"{str(file)!r}: {key} net.{name} has weight {tuple(w.shape)} and bias "
                    f"{tuple(b.shape)}, expected [out, in] and [out]"
                )
            layers.append((w.detach().to(torch.float32), b.detach().to(torch.float32)))
        if k_hidden < 1:
            raise ReferenceFormatError(f"{str(file)!r}: {key} has no hidden layer")
        h = layers[0][0].shape[0]
        want = [(h, s + a)] + [(h, h)] * (k_hidden - 1) + [(d, h), (d, h)]
        got = [tuple(w.shape) for w, _ in layers]
        if got != want:
            raise ReferenceFormatError(
                f"{str(file)!r}: {key} layer shapes {got} do not fit obs_dim={s}, act_dim={a}, "
                f"hidden {h} (expected {want})"
            )
        if shape0 is not None and (h, k_hidden) != shape0:
            raise ReferenceFormatError(
                f"{str(file)!r}: members differ in size ({key}: hidden {h}, {k_hidden} layers; "
                f"model_0: hidden {shape0[0]}, {shape0[1]} layers)"
            )
        shape0 = (h, k_hidden)
        members.append(layers)
    assert shape0 is not None
    hidden = params.get("hidden_dim", 200)  # the reference's default when params has none
    if hidden != shape0[0]:
        raise ReferenceFormatError(
            f"{str(file)!r} has hidden width {shape0[0]}, but params hidden_dim is {hidden}"
        )
    return members, shape0[0], shape0[1]


def _filter(data: dict[str, Any], key: str, dim: int, pkl: Path) -> tuple[np.ndarray, np.ndarray]:
    f = data[key]
    if not isinstance(f, MeanStdevFilterState):
        raise ReferenceFormatError(
            f"{str(pkl)!r}: {key} is a {type(f).__name__}, expected the reference's MeanStdevFilter"
        )
    clip = f.get("clip")
    if not isinstance(clip, int | float) or float(clip) != NORMALIZER_CLIP:
        raise ReferenceFormatError(
            f"{str(pkl)!r}: {key} clips at {clip!r}, but eor's normaliser clips at "
            f"±{NORMALIZER_CLIP:g}; this model cannot be converted exactly"
        )
    out = []
    for name in ("mean", "stdev"):
        v = f.get(name)
        if not isinstance(v, np.ndarray) or v.shape != (dim,):
            got = v.shape if isinstance(v, np.ndarray) else repr(v)
            raise ReferenceFormatError(
                f"{str(pkl)!r}: {key}.{name} must be an array of shape ({dim},), got {got}"
                + (" (the filter was never fitted)" if not isinstance(v, np.ndarray) else "")
            )
        out.append(np.asarray(v, dtype=np.float64))
    mean, std = out
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ReferenceFormatError(f"{str(pkl)!r}: {key} has non-finite mean/stdev or a stdev <= 0")
    # What the reference divides by: torch.FloatTensor(stdev), float32.
    if (std.astype(np.float32) <= 0).any():
        raise ReferenceFormatError(f"{str(pkl)!r}: {key}.stdev underflows float32")
    return mean, std


def _val_rows(buf: Any, s: int, a: int) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The validation buffer's rows that `sample_all` returns, or (None, why not)."""
    if not isinstance(buf, DataBufferState):
        return None, f"valid_buffer is a {type(buf).__name__}, not a DataBuffer"
    size = buf.get("_size")
    if not isinstance(size, int | np.integer) or size < 1:
        return None, f"valid_buffer is empty (_size={size!r})"
    size = int(size)
    rows: dict[str, np.ndarray] = {}
    for name, attr, width in (
        ("states", "_states", s),
        ("actions", "_actions", a),
        ("rewards", "_rewards", 1),
        ("next_states", "_next_states", s),
    ):
        arr = buf.get(attr)
        if not isinstance(arr, np.ndarray):
            return None, (
                f"valid_buffer.{attr} is a {type(arr).__name__}, not a numpy array "
                "(a buffer made with as_numpy=False holds torch tensors, which eor does not read)"
            )
        if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] < size:
            return None, f"valid_buffer.{attr} has shape {arr.shape}, expected [>= {size}, {width}]"
        rows[name] = arr[:size]
    return rows, None


# ----------------------------------------------------------------------------- conversion


def _filtered_inputs(ref: ReferenceModel, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The reference's `prepare_data` inputs: numpy filters (float64), then float32."""
    s = np.clip((states - ref.state_mean) / ref.state_std, -NORMALIZER_CLIP, NORMALIZER_CLIP)
    a = np.clip((actions - ref.action_mean) / ref.action_std, -NORMALIZER_CLIP, NORMALIZER_CLIP)
    return np.concatenate([s, a], axis=1).astype(np.float32)


@torch.no_grad()
def validation_mse(
    ref: ReferenceModel, device: str | torch.device = "cpu", chunk: int = 8192
) -> np.ndarray:
    """Each member's `Net.get_validation_loss` on the pickled validation buffer: `[E]` float64.

    The mean over all rows and all D columns of (mean output − [Δobs, reward])², with the
    reference's float32 inputs and targets, computed in float64.
    """
    if ref.val is None:
        raise ReferenceFormatError(f"no usable validation buffer: {ref.val_problem}")
    v = ref.val
    x = torch.from_numpy(_filtered_inputs(ref, v["states"], v["actions"])).to(device)
    delta = (v["next_states"] - v["states"]).astype(np.float32)  # float32, as the reference
    target = torch.from_numpy(np.concatenate([delta, v["rewards"].astype(np.float32)], axis=1))
    target = target.to(device, torch.float64)
    d = ref.obs_dim + 1
    out = np.zeros(ref.num_members)
    for e, layers in enumerate(ref.members):
        ws = [(w.to(device, torch.float64), b.to(device, torch.float64)) for w, b in layers]
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, x.shape[0], chunk):
            h = x[start : start + chunk].to(torch.float64)
            for w, b in ws[:-2]:
                h = F.silu(F.linear(h, w, b))
            mean = F.linear(h, *ws[-2])  # the delta head: [Δobs, reward] means
            total += (mean - target[start : start + chunk]).square().sum()
        out[e] = float(total) / (x.shape[0] * d)
    return out


def rank_members(losses: np.ndarray) -> list[int]:
    """The reference's `val_losses.argsort()` (ascending, NaN last; stable for ties)."""
    return [int(i) for i in np.argsort(losses, kind="stable")]


def parse_elites(text: str) -> list[int]:
    """`"0,2,4"` -> [0, 2, 4] (ValueError naming what was expected)."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"elites must be comma-separated member indices, got {text!r}") from None


def to_ensemble(
    ref: ReferenceModel,
    *,
    elites: list[int] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[DynamicsEnsemble, dict[str, Any]]:
    """The eor ensemble of a read reference model, and its `model_info` (see `model_info`).

    elites: the elite members to use instead of the reference loader's choice (required when the
    pickle has no usable validation buffer). The validation losses are computed on `device`.
    """
    e, k = ref.num_members, ref.num_elites
    losses: np.ndarray | None = None
    ranking: list[int] | None = None
    gap: float | None = None
    if ref.val is not None:
        losses = validation_mse(ref, device=device)
        ranking = rank_members(losses)
        if k < e:
            lo, hi = losses[ranking[k - 1]], losses[ranking[k]]
            if math.isfinite(lo) and math.isfinite(hi):
                gap = float((hi - lo) / max(abs(hi), 1e-300))
    if elites is None:
        if ranking is None:
            raise ReferenceFormatError(
                f"{str(ref.source_dir / ref.pickle_name)!r} has no usable validation buffer "
                f"({ref.val_problem}), so the elites the reference's loader would pick cannot be "
                f"computed; give them: eor convert-model {ref.source_dir} OUT --elites "
                f"{','.join(map(str, range(k)))} (then load OUT)"
            )
        chosen = sorted(ranking[:k])
        source = "validation buffer"
    else:
        chosen = sorted(int(i) for i in elites)
        if len(set(chosen)) != k or chosen[0] < 0 or chosen[-1] >= e:
            raise ValueError(
                f"elites must be {k} distinct member indices in [0, {e}) (params num_elites={k}), "
                f"got {list(elites)}"
            )
        source = "given"

    model = DynamicsEnsemble(
        ref.obs_dim,
        ref.act_dim,
        num_members=e,
        num_elites=k,
        hidden_dim=ref.hidden_dim,
        num_hidden=ref.num_hidden,
        env_name=_eor_env_name(ref),
    )
    with torch.no_grad():
        n_layers = ref.num_hidden + 1
        for j in range(n_layers):
            if j < ref.num_hidden:
                w = torch.stack([m[j][0].T for m in ref.members])  # [E, in, out]
                b = torch.stack([m[j][1] for m in ref.members])
            else:  # the head: delta's outputs, then logvar's
                w = torch.stack([torch.cat([m[-2][0], m[-1][0]], dim=0).T for m in ref.members])
                b = torch.stack([torch.cat([m[-2][1], m[-1][1]]) for m in ref.members])
            model.weights[j].copy_(w)
            model.biases[j].copy_(b)
        model.max_logvar.copy_(ref.max_logvar)
        model.min_logvar.copy_(ref.min_logvar)
        mean = np.concatenate([ref.state_mean, ref.action_mean]).astype(np.float32)
        std = np.concatenate([ref.state_std, ref.action_std]).astype(np.float32)
        model.normalizer.mean.copy_(torch.from_numpy(mean))
        model.normalizer.std.copy_(torch.from_numpy(std))
    model.set_elites(chosen)
    info = model_info(ref, chosen, source, losses, ranking, gap)
    model.meta = {"format": FORMAT, "model_info": info}
    model.requires_grad_(False)
    return model.to(device).eval(), info


def model_info(
    ref: ReferenceModel,
    elites: list[int],
    source: str,
    losses: np.ndarray | None,
    ranking: list[int] | None,
    gap: float | None,
) -> dict[str, Any]:
    """The record of a converted model (train-agent's config.json "model")."""
    return {
        "format": FORMAT,
        "source_dir": str(ref.source_dir.resolve()),
        "pickle": ref.pickle_name,
        "weights_sha256": ref.weights_sha256,
        "pickle_sha256": ref.pickle_sha256,
        "dataset": ref.env_name,
        "dataset_checksum": None,
        "epoch": None,
        "num_members": ref.num_members,
        "num_elites": ref.num_elites,
        "hidden_dim": ref.hidden_dim,
        "num_hidden": ref.num_hidden,
        "elites": list(elites),
        "elites_from": source,
        "validation_mse": None if losses is None else [float(v) for v in losses],
        "validation_rows": None if ref.val is None else int(ref.val["states"].shape[0]),
        "elite_ranking": ranking,
        "elite_boundary_gap": gap,
        "n_train": ref.n_train,
        "validation_performance": ref.validation_performance,
    }


def _eor_env_name(ref: ReferenceModel) -> str:
    from eor.envs import get_env

    try:
        spec = get_env(ref.env_name)
    except (ValueError, TypeError) as exc:
        raise ReferenceFormatError(
            f"{str(ref.source_dir / ref.pickle_name)!r}: params env_name {ref.env_name!r} is not "
            f"an env eor knows: {exc}"
        ) from None
    return spec.name


def _summary(info: dict[str, Any]) -> str:
    mse = info["validation_mse"]
    text = f"elites {info['elites']} ({info['elites_from']}"
    if mse is not None:
        text += ", validation MSE " + ", ".join(f"{i}:{v:.4g}" for i, v in enumerate(mse))
    text += ")"
    gap = info["elite_boundary_gap"]
    if gap is not None and gap < NEAR_TIE:
        text += (
            f"; NOTE the elite boundary is a near tie (relative gap {gap:.1e}): the reference's "
            "float32 computation may have ranked those two members the other way"
        )
    return text


def load_reference(
    path: str | Path,
    *,
    env: Any = None,
    device: str | torch.device = "cpu",
    elites: list[int] | None = None,
) -> DynamicsEnsemble:
    """`eor.dynamics.load` for a reference-format directory: read, convert, check the env.

    Logs one line saying that the directory was converted on the fly.
    """
    path = Path(path)
    ref = read_reference_dir(path)
    if env is not None:
        from eor.envs import get_env

        spec = get_env(env)
        own = _eor_env_name(ref)
        if spec.name != own:
            raise ReferenceFormatError(
                f"{str(path)!r} is a dynamics model for env {own!r}, but env {spec.name!r} was asked for"
            )
        if (spec.obs_dim, spec.act_dim) != (ref.obs_dim, ref.act_dim):
            raise ReferenceFormatError(
                f"{str(path)!r} has ob_dim={ref.obs_dim}, ac_dim={ref.act_dim}, but env "
                f"{spec.name!r} has obs_dim={spec.obs_dim}, act_dim={spec.act_dim}"
            )
    model, info = to_ensemble(ref, elites=elites, device=device)
    log.warning(
        "%s is a reference-format model directory (%s + %s): converted on the fly; %s. "
        "`eor convert-model` saves the conversion.",
        path,
        WEIGHTS,
        ref.pickle_name,
        _summary(info),
    )
    return model


# ----------------------------------------------------------------------------- eor model dir


class _ConvertedRun:
    """What `eor.dynamics.io.save_checkpoint(final=True)` reads of a trainer."""

    def __init__(self, model: DynamicsEnsemble, ref: ReferenceModel, info: dict[str, Any]) -> None:
        from eor.dynamics.config import DynamicsConfig

        fields = DynamicsConfig.__dataclass_fields__
        self.model = model
        self.config = DynamicsConfig(
            **{k: v for k, v in ref.params.items() if k in fields and k != "dataset"}
        )
        mse = info["validation_mse"]
        self.holdout_losses = list(mse) if mse is not None else [float("nan")] * model.num_members
        self.epoch = 0
        self.stop_reason = "converted from a reference-format model directory"
        self.epoch_times: list[float] = []
        self.n_train = ref.n_train
        self.n_holdout = info["validation_rows"]


def convert_dir(
    src: str | Path, out: str | Path, *, elites: list[int] | None = None
) -> dict[str, Any]:
    """Convert reference directory `src` into a new eor model directory `out` (written by
    `eor.dynamics.io.save_checkpoint`); returns the model_info. `out` must not exist or be empty."""
    from typing import cast

    from eor.dynamics.io import env_identity, save_checkpoint
    from eor.dynamics.train import DynamicsTrainer

    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{str(out)!r} already exists and is not an empty directory")
    ref = read_reference_dir(src)
    model, info = to_ensemble(ref, elites=elites)
    dataset = {
        "name": ref.env_name,
        "source": FORMAT,
        "path": None,
        "checksum": None,
        "n_transitions": None,
        "reference": {**info, "params": _jsonable(ref.params)},
    }
    run = cast(DynamicsTrainer, _ConvertedRun(model, ref, info))
    save_checkpoint(
        out, run, env=env_identity(model.env_name or ""), dataset=dataset, metrics=[], final=True
    )
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
