"""Named, versioned models, found in an explicit chain of sources.

    ModelResolver([BUILTIN, cache_or_store, ...]).load("aerial@3")   # or load_model(spec, sources)

A *source* (:class:`ModelSource`) lists the versions it has of a name and hands out a
version's weights with the SHA-256 they must have. :class:`Registry` is the local one: a
folder with a ``registry.json`` beside the weights files (the package's own
``codec/weights`` is :data:`BUILTIN`; caches are others)::

    {"models": {"default": {"versions": {"1": {"file": "default-v1.pt", "sha256": "…", ...}}}}}

The pipeline adds a source for its object-store registry and passes the chain; nothing is
registered process-wide. ``NAME`` alone means the highest version of the first source that
knows the name; built-in names always come from :data:`BUILTIN`. Every load hashes the
bytes it gets and builds the model from those same bytes, and a stream's model id
(``NAME@VERSION``) plus hash tells the decoder exactly which weights it needs, so old records
keep decoding after the default moves on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from codec import families
from codec.errors import ModelNotFoundError
from codec.families.base import WEIGHTS_FORMAT, weights_bytes_of, write_weights
from codec.loaded import LoadedModel  # noqa: F401 (the registry hands these out)

WEIGHTS_DIR = Path(__file__).parent / "weights"


def parse_spec(spec: str) -> tuple[str, int | None]:
    """``"NAME"`` → (NAME, None); ``"NAME@VERSION"`` → (NAME, VERSION)."""
    name, _, version = spec.partition("@")
    if not name:
        raise ModelNotFoundError(f"empty model name in {spec!r}")
    if version and not version.isdigit():
        raise ModelNotFoundError(f"model version must be a number: {spec!r}")
    return name, int(version) if version else None


@runtime_checkable
class ModelSource(Protocol):
    """Where weights come from. A source may also have a ``revision`` attribute that changes when
    weights already handed out may have changed (a resolver then loads them again)."""

    label: str  # for messages: the folder or URL

    def names(self) -> list[str]:
        """The model names this source knows (for error messages)."""

    def versions(self, name: str) -> list[int]:
        """The versions of ``name`` here, ascending; [] if this source does not know it."""

    def weights(self, name: str, version: int) -> tuple[bytes, str]:
        """(the weights file's bytes, the sha256 hex they must have); ModelNotFoundError if absent."""


class Registry(ModelSource):
    """A folder of weights files and the registry.json that names them (built-in weights, caches)."""

    def __init__(self, root: Path | str = WEIGHTS_DIR):
        self.root = Path(root)
        self._resolver: ModelResolver | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def label(self) -> str:
        return str(self.root)

    @property
    def index_path(self) -> Path:
        return self.root / "registry.json"

    @property
    def revision(self):
        """Changes whenever registry.json is rewritten (by any process): cached loads are redone."""
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def index(self) -> dict:
        if not self.index_path.exists():
            return {"models": {}}
        return json.loads(self.index_path.read_text())

    def names(self) -> list[str]:
        return sorted(self.index()["models"])

    def versions(self, name: str) -> list[int]:
        return sorted(int(v) for v in self.index()["models"].get(name, {}).get("versions", {}))

    def entry(self, name: str, version: int) -> dict:
        """The registry.json entry of ``NAME@VERSION`` (file, sha256, config, metadata)."""
        try:
            return self.index()["models"][name]["versions"][str(version)]
        except KeyError:
            raise ModelNotFoundError(f"no {name}@{version} in {self.label}") from None

    def weights(self, name: str, version: int) -> tuple[bytes, str]:
        entry = self.entry(name, version)
        path = self.root / entry["file"]
        if not path.exists():
            raise ModelNotFoundError(f"weights of {name}@{version} missing: {path}")
        return path.read_bytes(), entry["sha256"]

    def load(self, spec: str = "default") -> LoadedModel:
        """A model from this folder alone (cached): ``ModelResolver([self]).load(spec)``."""
        with self._lock:
            if self._resolver is None:
                self._resolver = ModelResolver((self,))
        return self._resolver.load(spec)

    def register(self, name: str, model, **metadata) -> str:
        """Save a finalised model as the next version of ``name``; returns ``NAME@VERSION``."""
        blob = weights_bytes(model)
        with self._index_lock():
            version = (self.versions(name) or [0])[-1] + 1
            self._write_version(name, version, blob, config=model.config.model_dump(), **metadata)
        return f"{name}@{version}"

    def add_version(self, name: str, version: int, blob: bytes, **metadata) -> str:
        """Put weights made elsewhere into this folder as ``NAME@VERSION`` (kept as given, not renumbered).

        Safe for several processes on one machine (a file lock around the index; files
        are written to a temporary name first).
        """
        with self._index_lock():
            self._write_version(name, version, bytes(blob), **metadata)
        return f"{name}@{version}"

    def _index_lock(self):
        """An exclusive lock on this folder's index, across processes (held while the file is open)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / ".lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def _write_version(self, name: str, version: int, blob: bytes, **metadata) -> None:
        """Write the weights, then the index entry naming them with the hash of exactly these bytes."""
        file = f"{name}-v{version}.pt"
        _write_atomic(self.root / file, blob)
        index = self.index()
        versions = index["models"].setdefault(name, {"versions": {}})["versions"]
        versions[str(version)] = {"file": file, "sha256": hashlib.sha256(blob).hexdigest(), **metadata}
        _write_atomic(self.index_path, (json.dumps(index, indent=2) + "\n").encode())


def weights_state(model) -> dict:
    """What a weights file of ``model`` holds (its family's :meth:`~codec.families.base.Family.weights_state`)."""
    return families.of_model(model).weights_state(model)


def save_weights(model, path) -> None:
    """Write a weights file (``path``: a file name or a binary file object)."""
    write_weights(weights_state(model), path)


def weights_bytes(model) -> bytes:
    return weights_bytes_of(weights_state(model))


def model_from_weights(blob: bytes, name: str = "weights"):
    """A model from a weights file's bytes, built by the family the file names; never runs code from the
    file (``weights_only=True``)."""
    import pickle

    import torch

    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelNotFoundError(f"{name} is not a {WEIGHTS_FORMAT} file (refused to unpickle it: {exc})") from exc
    except Exception as exc:
        raise ModelNotFoundError(f"{name} is not a readable {WEIGHTS_FORMAT} file: {type(exc).__name__}: {exc}") from exc
    try:
        family = families.of_state(state, name)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{name}: {exc}" if not str(exc).startswith(name) else str(exc)) from None
    return family.model_from_state(state)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole (a unique temporary name beside it, then a rename)."""
    import uuid

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


BUILTIN = Registry(WEIGHTS_DIR)
DEFAULT_REGISTRY = BUILTIN  # the older name


def _is_builtin(source: ModelSource) -> bool:
    return source is BUILTIN or (isinstance(source, Registry) and source.root.resolve() == BUILTIN.root.resolve())


class ModelResolver:
    """Model specs → model ids and hash-checked models, over a chain of sources asked in order.

    The first source that has any version of a name owns that name (so one id never means two
    files); :data:`BUILTIN`, when in the chain, is asked first whatever its position, so no other
    source can shadow a built-in name. Loads are cached per resolver by model id.
    """

    def __init__(self, sources: Sequence[ModelSource] = (BUILTIN,)):
        sources = tuple(sources)
        self.sources = tuple(s for s in sources if _is_builtin(s)) + tuple(s for s in sources if not _is_builtin(s))
        self._cache: dict[str, tuple[object, LoadedModel]] = {}  # model id → (source revision, model)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelResolver([{', '.join(s.label for s in self.sources)}])"

    def locate(self, spec: str) -> tuple[ModelSource, str, int]:
        """(the source that owns the name, name, version); the latest version when none is given."""
        name, version = parse_spec(spec)
        for source in self.sources:
            have = source.versions(name)
            if not have:
                continue
            if version is None:
                return source, name, max(have)
            if version not in have:
                raise ModelNotFoundError(f"model {name!r} has no version {version} in {source.label} "
                                         f"(has {', '.join(map(str, sorted(have)))})")
            return source, name, version
        searched = "; ".join(f"{s.label} (known: {', '.join(s.names()) or 'none'})" for s in self.sources)
        raise ModelNotFoundError(f"no model named {name!r} in {searched or 'no model source at all'}")

    def resolve(self, spec: str) -> str:
        """``"NAME"`` or ``"NAME@VERSION"`` → ``"NAME@VERSION"`` (ModelNotFoundError if no source has it)."""
        _, name, version = self.locate(spec)
        return f"{name}@{version}"

    def load(self, spec: str) -> LoadedModel:
        """The model ``spec`` names, built from the very bytes whose SHA-256 was checked (cached)."""
        source, name, version = self.locate(spec)
        model_id, revision = f"{name}@{version}", getattr(source, "revision", None)
        with self._lock:
            hit = self._cache.get(model_id)
            if hit is None or hit[0] != revision:
                hit = self._cache[model_id] = (revision, _load_verified(source, name, version))
            return hit[1]


def _load_verified(source: ModelSource, name: str, version: int) -> LoadedModel:
    """Hash the blob once and build the model from that same blob: bytes swapped meanwhile are never loaded."""
    model_id = f"{name}@{version}"
    blob, expected = source.weights(name, version)
    blob = bytes(blob)
    digest = hashlib.sha256(blob).digest()
    if digest.hex() != expected.lower():
        raise ModelNotFoundError(f"the weights file of {model_id} in {source.label} does not match the registry "
                                 f"(sha256 {digest.hex()[:16]}…, expected {expected[:16]}…)")
    return LoadedModel(model_from_weights(blob, f"{model_id} in {source.label}").eval(), model_id, digest)


_RESOLVERS: dict[tuple[int, ...], ModelResolver] = {}  # load_model's resolvers, one per chain of sources
_MAX_RESOLVERS = 8
_RESOLVERS_LOCK = threading.Lock()


def load_model(spec: str = "default", sources: Sequence[ModelSource] | None = None) -> LoadedModel:
    """Load ``NAME`` or ``NAME@VERSION`` from ``sources`` (default: the built-in weights), cached per process.

    A job that loads many models from its own chain should hold a :class:`ModelResolver` instead.
    """
    chain = (BUILTIN,) if sources is None else tuple(sources)
    if any(_is_builtin(s) for s in chain) and BUILTIN.versions(parse_spec(spec)[0]):
        return BUILTIN.load(spec)  # built-in names never come from elsewhere: one cached copy per process
    key = tuple(id(s) for s in chain)  # the resolver holds the sources, so these ids stay theirs
    with _RESOLVERS_LOCK:
        if key not in _RESOLVERS:
            if len(_RESOLVERS) >= _MAX_RESOLVERS:
                del _RESOLVERS[next(iter(_RESOLVERS))]
            _RESOLVERS[key] = ModelResolver(chain)
        resolver = _RESOLVERS[key]
    return resolver.load(spec)



RASTER_MODEL = "satellite"  # trained on 16-bit multi-band satellite products (issue 17)


def default_model_name(raster: bool, sources: Sequence[ModelSource] | None = None) -> str:
    """The model an encode uses when none is named: :data:`RASTER_MODEL` for rasters (anything but 8-bit
    gray/RGB/RGBA) when one of ``sources`` (default: the built-in weights) has it, else ``default``.
    The one home of this choice: the CLI, codec.encode and the pipeline all ask here."""
    chain = (BUILTIN,) if sources is None else tuple(sources)
    if raster and any(s.versions(RASTER_MODEL) for s in chain):
        return RASTER_MODEL
    return "default"
