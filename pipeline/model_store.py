"""A versioned model registry on object storage (or any fsspec URL).

    URL/NAME/v0003/weights.pt    finalised weights, the codec's own file format
    URL/NAME/v0003/card.json     written last, so a version exists once its card does:
                                 sha256, model config, base model, training config, data, metrics

``install("aerial")`` / ``install("aerial@3")`` copies a version into a local cache
folder laid out as a ``codec.Registry`` (hash checked) and adds that folder to the
codec's search path, so ``codec.load_model("aerial@3")`` — and the decoding of any
record that names it — works in this process. The codec itself never touches storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from codec.errors import ModelNotFoundError
from codec.registry import DEFAULT_REGISTRY, Registry, add_registry, parse_spec

from .config import StorageOptions
from .storage import filesystem, put_if_absent

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_REGISTER_TRIES = 20  # versions tried in a row before register gives up


def cache_root() -> Path:
    return Path(os.environ.get("TLIC_MODEL_CACHE", Path.home() / ".cache" / "tlic" / "models"))


class ModelStore:
    def __init__(self, url: str, storage: StorageOptions | None = None):
        self.url = url.rstrip("/")
        self.storage = storage
        self.fs, self.root = filesystem(url, storage)
        self.root = self.root.rstrip("/")
        self.cache = Registry(cache_root() / hashlib.sha1(self.url.encode()).hexdigest()[:16])

    def _dir(self, name: str, version: int) -> str:
        return f"{self.root}/{name}/v{version:04d}"

    def versions(self, name: str) -> list[int]:
        """Committed versions of ``name`` (those whose card exists), ascending."""
        try:
            cards = self.fs.glob(f"{self.root}/{name}/v*/card.json")
        except FileNotFoundError:
            return []
        return sorted(int(c.rsplit("/", 2)[-2][1:]) for c in cards)

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
        if name in DEFAULT_REGISTRY.index()["models"]:
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
                return f"{name}@{version}"
            # another registration of the very same weights committed this version first: take the next
        raise RuntimeError(f"could not register {name}: versions {first}..{first + MAX_REGISTER_TRIES - 1} were "
                           f"all taken by concurrent registrations in {self.url}; register again")

    def install(self, spec: str) -> str:
        """Make ``spec`` loadable by ``codec.load_model`` in this process; returns ``NAME@VERSION``.

        The weights are downloaded once, checked against the card's sha256, and those same
        bytes go into the local cache (whose loads check the hash again). A cached copy
        whose hash is not the card's (a registry recreated under the same URL) is replaced.
        """
        name, version = self.resolve(spec)
        model_id = f"{name}@{version}"
        add_registry(self.cache)
        card = self.card(model_id)
        cached = self.cache.index()["models"].get(name, {}).get("versions", {}).get(str(version))
        if not cached or cached.get("sha256") != card["sha256"]:
            blob = self.fs.cat_file(f"{self._dir(name, version)}/weights.pt")
            if hashlib.sha256(blob).hexdigest() != card["sha256"]:
                raise ModelNotFoundError(f"{self.url}/{name}/v{version:04d}/weights.pt does not match its card's sha256")
            self.cache.add_version(name, version, blob, source=self.url)
        return model_id


def install_model(spec: str, registry_url: str | None, storage: StorageOptions | None = None) -> str:
    """The ``NAME@VERSION`` a job should use: built-in names from the package, others from the
    object-storage registry (installed into this process). Raises ModelNotFoundError early."""
    name, _ = parse_spec(spec)
    if name in DEFAULT_REGISTRY.index()["models"]:
        n, v, _ = DEFAULT_REGISTRY.resolve(spec)
        return f"{n}@{v}"
    if not registry_url:
        known = ", ".join(sorted(DEFAULT_REGISTRY.index()["models"]))
        raise ModelNotFoundError(f"model {spec!r} is not built in (built in: {known}); give --model-registry URL "
                                 "to load models trained with jobs/train_codec.py")
    return ModelStore(registry_url, storage).install(spec)
