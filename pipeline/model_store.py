"""A versioned model registry on object storage (or any fsspec URL).

    URL/NAME/v0003/weights.pt    finalised weights, the codec's own file format
    URL/NAME/v0003/card.json     written last, so a version exists once its card does:
                                 sha256, model config, base model, training config, data, metrics

A ``ModelStore`` is a ``codec.registry.ModelSource``: ``model_resolver(url, storage)``
chains it after the built-in models, and that resolver is the one place a job turns
``--model aerial`` into ``aerial@3`` (on the driver, once) and into weights (in each
replica, hash checked, cached locally per store URL). The codec itself never touches
storage, and nothing is registered in process-global state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from codec.errors import ModelNotFoundError
from codec.registry import BUILTIN, ModelResolver, Registry, parse_spec

from .config import StorageOptions
from .storage import filesystem, put_if_absent

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_REGISTER_TRIES = 20  # versions tried in a row before register gives up
VERSIONS_TTL_S = 60.0  # how long a listing of a name's versions is trusted


def cache_root() -> Path:
    return Path(os.environ.get("TLIC_MODEL_CACHE", Path.home() / ".cache" / "tlic" / "models"))


class ModelStore:
    """Versioned models under a URL, readable as a ``ModelSource`` and writable by ``register``."""

    def __init__(self, url: str, storage: StorageOptions | None = None):
        self.url = url.rstrip("/")
        self.storage = storage
        self.fs, self.root = filesystem(url, storage)
        self.root = self.root.rstrip("/")
        self.cache = Registry(cache_root() / hashlib.sha1(self.url.encode()).hexdigest()[:16])
        self._versions: dict[str, tuple[float, list[int]]] = {}

    @property
    def label(self) -> str:
        return self.url

    def _dir(self, name: str, version: int) -> str:
        return f"{self.root}/{name}/v{version:04d}"

    def versions(self, name: str) -> list[int]:
        """Committed versions of ``name`` (those whose card exists), ascending; listed at most once
        a minute per name, so resolving the model of every record of a restore costs no listing."""
        hit = self._versions.get(name)
        if hit and time.monotonic() - hit[0] < VERSIONS_TTL_S:
            return hit[1]
        try:
            cards = self.fs.glob(f"{self.root}/{name}/v*/card.json")
        except FileNotFoundError:
            cards = []
        found = sorted(int(c.rsplit("/", 2)[-2][1:]) for c in cards)
        self._versions[name] = (time.monotonic(), found)
        return found

    def names(self) -> list[str]:
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False) if self.versions(p.rsplit("/", 1)[-1]))
        except FileNotFoundError:
            return []

    def resolve(self, spec: str) -> tuple[str, int]:
        name, version = parse_spec(spec)
        have = self.versions(name)
        if not have:
            raise ModelNotFoundError(f"no model named {name!r} in {self.url} (known: {', '.join(self.names()) or 'none'})")
        if version is None:
            version = have[-1]
        if version not in have:
            raise ModelNotFoundError(f"model {name!r} has no version {version} in {self.url} (has {have})")
        return name, version

    def card(self, spec: str) -> dict:
        name, version = self.resolve(spec)
        return json.loads(self.fs.cat_file(f"{self._dir(name, version)}/card.json"))

    def register(self, name: str, weights: bytes, **card) -> str:
        """Upload weights as the next free version of ``name``; returns ``NAME@VERSION``.

        Both files are written create-only (a conditional PUT on S3, a hard link locally):
        ``weights.pt`` first, which claims the version, then ``card.json``, which commits it.
        A version another registration claimed first (or one left with weights but no card
        by a registration that died) is skipped and the next one tried, so concurrent
        registrations get distinct versions and no card or weights file is ever overwritten.
        Gives up with a RuntimeError after ``MAX_REGISTER_TRIES`` taken versions in a row.
        """
        if not NAME_RE.match(name):
            raise ValueError(f"model name {name!r}: use lowercase letters, digits, '-' or '_' (starting with a letter)")
        if BUILTIN.versions(name):
            raise ValueError(f"{name!r} is a built-in model name; pick another so model ids stay unambiguous")
        weights = bytes(weights)
        sha = hashlib.sha256(weights).hexdigest()
        first = (self.versions(name) or [0])[-1] + 1
        for version in range(first, first + MAX_REGISTER_TRIES):
            d = self._dir(name, version)
            if not put_if_absent(self.fs, f"{d}/weights.pt", weights):
                continue  # claimed by another registration (or left by one that died)
            body = {"model_id": f"{name}@{version}", "sha256": sha,
                    "registered_at": datetime.now(timezone.utc).isoformat(), **card}
            if put_if_absent(self.fs, f"{d}/card.json", json.dumps(body, indent=1, default=str).encode()):
                self._versions.pop(name, None)  # the next listing sees the new version
                return f"{name}@{version}"
            # another registration of the very same weights committed this version first: take the next
        raise RuntimeError(f"could not register {name}: versions {first}..{first + MAX_REGISTER_TRIES - 1} were "
                           f"all taken by concurrent registrations in {self.url}; register again")

    def weights(self, name: str, version: int) -> tuple[bytes, str]:
        """(weights, the card's sha256): from the local cache when it holds exactly those bytes,
        else downloaded once, checked, and cached (the resolver checks the hash again on load)."""
        card = self.card(f"{name}@{version}")
        cached = self.cache.index()["models"].get(name, {}).get("versions", {}).get(str(version))
        if cached and cached.get("sha256") == card["sha256"]:
            blob, _ = self.cache.weights(name, version)
            if hashlib.sha256(blob).hexdigest() == card["sha256"]:
                return blob, card["sha256"]
        blob = self.fs.cat_file(f"{self._dir(name, version)}/weights.pt")
        if hashlib.sha256(blob).hexdigest() != card["sha256"]:
            raise ModelNotFoundError(f"{self.url}/{name}/v{version:04d}/weights.pt does not match its card's sha256")
        self.cache.add_version(name, version, blob, source=self.url)
        return blob, card["sha256"]


class JobModels(ModelResolver):
    """The resolver a job uses; without a store, a name it cannot find says how to give one."""

    def __init__(self, sources, hint: str = ""):
        super().__init__(sources)
        self.hint = hint

    def locate(self, spec: str):
        try:
            return super().locate(spec)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"{exc}{self.hint}") from None


def model_resolver(registry_url: str | None, storage: StorageOptions | None = None) -> ModelResolver:
    """The models a job can use: the built-in ones, then (with ``--model-registry``) the store's.

    Build one per process (a resolver holds a lock and a cache, so it is not shipped to actors)."""
    if registry_url:
        return JobModels([BUILTIN, ModelStore(registry_url, storage)])
    return JobModels([BUILTIN], "; models trained with jobs/train_codec.py need --model-registry URL")
