"""Named, versioned models: ``load_model("default")``, ``load_model("default@1")``.

The registry is a JSON file beside the weights (``codec/weights/registry.json``)::

    {"models": {"default": {"versions": {"1": {"file": "default-v1.pt", "sha256": "…", ...}}}}}

``NAME`` alone means the highest version. Every load checks the file's SHA-256
against the registry, and a stream's model id (``NAME@VERSION``) plus hash tells
the decoder exactly which weights it needs, so old records keep decoding after
the default moves on.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelNotFoundError
from .model import HyperpriorCodec, ModelConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FORMAT = "tlic-weights-1"


@dataclass
class LoadedModel:
    model: HyperpriorCodec
    model_id: str  # NAME@VERSION, written into every stream
    sha256: bytes

    @property
    def hash_hex(self) -> str:
        return self.sha256.hex()


def parse_spec(spec: str) -> tuple[str, int | None]:
    name, _, version = spec.partition("@")
    if not name:
        raise ModelNotFoundError(f"empty model name in {spec!r}")
    if version and not version.isdigit():
        raise ModelNotFoundError(f"model version must be a number: {spec!r}")
    return name, int(version) if version else None


class Registry:
    """A folder of weights files and the registry.json that names them."""

    def __init__(self, root: Path | str = WEIGHTS_DIR):
        self.root = Path(root)
        self._cache: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    @property
    def index_path(self) -> Path:
        return self.root / "registry.json"

    def index(self) -> dict:
        if not self.index_path.exists():
            return {"models": {}}
        return json.loads(self.index_path.read_text())

    def resolve(self, spec: str) -> tuple[str, int, dict]:
        name, version = parse_spec(spec)
        models = self.index()["models"]
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ModelNotFoundError(f"no model named {name!r} in {self.index_path} (known: {known})")
        versions = models[name]["versions"]
        if version is None:
            version = max(int(v) for v in versions)
        if str(version) not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version} (has {', '.join(sorted(versions))})")
        return name, version, versions[str(version)]

    def load(self, spec: str = "default") -> LoadedModel:
        name, version, entry = self.resolve(spec)
        model_id = f"{name}@{version}"
        with self._lock:
            if model_id not in self._cache:
                self._cache[model_id] = self._load_file(model_id, self.root / entry["file"], entry["sha256"])
            return self._cache[model_id]

    @staticmethod
    def _load_file(model_id: str, path: Path, sha256: str) -> LoadedModel:
        if not path.exists():
            raise ModelNotFoundError(f"weights of {model_id} missing: {path}")
        blob = path.read_bytes()  # hashed and loaded from these same bytes: a file swapped meanwhile is never loaded
        digest = hashlib.sha256(blob).digest()
        if digest.hex() != sha256:
            raise ModelNotFoundError(
                f"weights file {path} does not match the registry (sha256 {digest.hex()[:16]}…, expected {sha256[:16]}…)"
            )
        return LoadedModel(model_from_weights(blob, str(path)).eval(), model_id, digest)

    def register(self, name: str, model: HyperpriorCodec, **metadata) -> str:
        """Save a finalised model as the next version of ``name``; returns ``NAME@VERSION``."""
        import fcntl

        blob = weights_bytes(model)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self.index()
            versions = index["models"].setdefault(name, {"versions": {}})["versions"]
            version = max((int(v) for v in versions), default=0) + 1
            file = f"{name}-v{version}.pt"
            _write_atomic(self.root / file, blob)
            versions[str(version)] = {"file": file, "sha256": hashlib.sha256(blob).hexdigest(),
                                      "config": model.config.model_dump(), **metadata}
            _write_atomic(self.index_path, (json.dumps(index, indent=2) + "\n").encode())
        return f"{name}@{version}"

    def add_version(self, name: str, version: int, blob: bytes, **metadata) -> str:
        """Put weights made elsewhere into this folder as ``NAME@VERSION`` (kept as given, not renumbered).

        Safe for several processes on one machine (a file lock around the index; files
        are written to a temporary name first).
        """
        import fcntl

        blob = bytes(blob)
        digest = hashlib.sha256(blob).hexdigest()  # the hash of exactly the bytes written below
        self.root.mkdir(parents=True, exist_ok=True)
        file = f"{name}-v{version}.pt"
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _write_atomic(self.root / file, blob)
            index = self.index()
            versions = index["models"].setdefault(name, {"versions": {}})["versions"]
            versions[str(version)] = {"file": file, "sha256": digest, **metadata}
            _write_atomic(self.index_path, (json.dumps(index, indent=2) + "\n").encode())
            with self._lock:
                self._cache.pop(f"{name}@{version}", None)
        return f"{name}@{version}"


def weights_state(model: HyperpriorCodec) -> dict:
    """What a weights file holds: tensors, dicts, lists, strings and numbers only (loadable with
    ``torch.load(weights_only=True)``)."""
    return {
        "format": WEIGHTS_FORMAT,
        "config": model.config.model_dump(),
        "state_dict": {k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
        "coding": model.coding_state(),
    }


def save_weights(model: HyperpriorCodec, path) -> None:
    """Write a weights file (``path``: a file name or a binary file object)."""
    torch.save(weights_state(model), path)


def weights_bytes(model: HyperpriorCodec) -> bytes:
    buf = io.BytesIO()
    save_weights(model, buf)
    return buf.getvalue()


def model_from_weights(blob: bytes, name: str = "weights") -> HyperpriorCodec:
    """A model from a weights file's bytes; never runs code from the file (``weights_only=True``)."""
    import pickle

    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelNotFoundError(f"{name} is not a {WEIGHTS_FORMAT} file (refused to unpickle it: {exc})") from exc
    except Exception as exc:
        raise ModelNotFoundError(f"{name} is not a readable {WEIGHTS_FORMAT} file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise ModelNotFoundError(f"{name} is not a {WEIGHTS_FORMAT} file")
    model = HyperpriorCodec(ModelConfig(**state["config"]))
    model.load_state_dict(state["state_dict"])
    model.load_coding_state(state["coding"])
    return model


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole (a unique temporary name beside it, then a rename)."""
    import os
    import uuid

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


DEFAULT_REGISTRY = Registry()
_EXTRA_REGISTRIES: list[Registry] = []


def add_registry(registry: Registry) -> None:
    """Search this registry folder too (after the built-in one): how models trained elsewhere
    (a domain model fetched from object storage, say) become loadable by id."""
    if all(r.root != registry.root for r in _EXTRA_REGISTRIES):
        _EXTRA_REGISTRIES.append(registry)


def load_model(spec: str = "default") -> LoadedModel:
    """Load a registered model by ``NAME`` or ``NAME@VERSION`` (cached per process).

    The built-in registry is searched first, then those added with ``add_registry``.
    """
    try:
        return DEFAULT_REGISTRY.load(spec)
    except ModelNotFoundError as exc:
        for registry in _EXTRA_REGISTRIES:
            try:
                return registry.load(spec)
            except ModelNotFoundError:
                continue
        if _EXTRA_REGISTRIES:
            raise ModelNotFoundError(f"{exc} (also searched {', '.join(str(r.root) for r in _EXTRA_REGISTRIES)})") from None
        raise
