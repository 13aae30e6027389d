"""Model resolution over an explicit chain of sources (codec.registry.ModelResolver)."""

import hashlib

import pytest

import codec
from codec import registry as codec_registry
from codec.errors import ModelNotFoundError
from codec.registry import BUILTIN, ModelResolver, ModelSource, Registry, load_model


def builtin_blob(version: int) -> bytes:
    return BUILTIN.weights("default", version)[0]


class MemorySource:
    """A model source held in memory (what an object-store source looks like to the resolver)."""

    def __init__(self, label: str, models: dict[str, dict[int, bytes]], wrong_hash: set = frozenset()):
        self.label, self.models, self.wrong_hash, self.fetched = label, models, set(wrong_hash), []

    def names(self) -> list[str]:
        return sorted(self.models)

    def versions(self, name: str) -> list[int]:
        return sorted(self.models.get(name, {}))

    def weights(self, name: str, version: int) -> tuple[bytes, str]:
        self.fetched.append(f"{name}@{version}")
        blob = self.models[name][version]
        sha = hashlib.sha256(blob).hexdigest()
        return blob, ("0" * 64 if f"{name}@{version}" in self.wrong_hash else sha)


@pytest.fixture(scope="module")
def blobs():
    return builtin_blob(1), builtin_blob(2)


def test_a_memory_source_and_a_registry_are_model_sources(tmp_path):
    assert isinstance(MemorySource("m", {}), ModelSource) and isinstance(Registry(tmp_path), ModelSource)
    assert codec_registry.DEFAULT_REGISTRY is BUILTIN


def test_the_first_source_that_knows_a_name_owns_it(blobs):
    a = MemorySource("store-a", {"aerial": {1: blobs[0], 2: blobs[1]}})
    b = MemorySource("store-b", {"aerial": {3: blobs[0]}, "urban": {5: blobs[1]}})
    assert ModelResolver([a, b]).resolve("aerial") == "aerial@2"
    assert ModelResolver([b, a]).resolve("aerial") == "aerial@3"
    assert ModelResolver([a, b]).resolve("urban") == "urban@5"  # only b knows it
    assert ModelResolver([a, b]).resolve("aerial@1") == "aerial@1"
    with pytest.raises(ModelNotFoundError, match="no version 3 in store-a"):  # a owns the name: no fall-through
        ModelResolver([a, b]).resolve("aerial@3")


def test_builtin_names_cannot_be_shadowed(blobs):
    impostor = MemorySource("impostor", {"default": {1: blobs[1], 99: blobs[1]}})
    latest = f"default@{BUILTIN.versions('default')[-1]}"
    for chain in ([impostor, BUILTIN], [BUILTIN, impostor]):
        resolver = ModelResolver(chain)
        assert resolver.resolve("default") == latest
        assert resolver.load("default@1").sha256 == hashlib.sha256(blobs[0]).digest()
        with pytest.raises(ModelNotFoundError, match="no version 99"):
            resolver.resolve("default@99")
    assert load_model("default", sources=[impostor, BUILTIN]).model_id == latest
    assert impostor.fetched == []


def test_an_unknown_model_names_every_source_and_what_they_know(blobs):
    a = MemorySource("s3://models/", {"aerial": {1: blobs[0]}})
    b = MemorySource("/cache/empty", {})
    with pytest.raises(ModelNotFoundError) as err:
        ModelResolver([BUILTIN, a, b]).load("nothing")
    msg = str(err.value)
    assert "no model named 'nothing'" in msg
    for part in (BUILTIN.label, "default", "s3://models/", "aerial", "/cache/empty (known: none)"):
        assert part in msg
    with pytest.raises(ModelNotFoundError, match="no model source"):
        ModelResolver([]).resolve("default")


def test_loads_are_cached_per_resolver_by_model_id(blobs):
    a = MemorySource("mem", {"aerial": {1: blobs[0], 2: blobs[1]}})
    resolver = ModelResolver([a])
    first = resolver.load("aerial")
    assert first.model_id == "aerial@2" and first.sha256 == hashlib.sha256(blobs[1]).digest()
    assert resolver.load("aerial@2") is first and resolver.load("aerial") is first
    assert a.fetched == ["aerial@2"]  # fetched and hashed once
    assert ModelResolver([a]).load("aerial") is not first  # another resolver, its own cache


def test_a_blob_whose_hash_differs_is_refused_and_not_cached(blobs):
    a = MemorySource("mem", {"bad": {1: blobs[0]}}, wrong_hash={"bad@1"})
    resolver = ModelResolver([a])
    for _ in range(2):
        with pytest.raises(ModelNotFoundError, match="does not match"):
            resolver.load("bad")
    assert a.fetched == ["bad@1", "bad@1"]
    a.wrong_hash.clear()
    assert resolver.load("bad").sha256 == hashlib.sha256(blobs[0]).digest()


def test_a_rewritten_registry_version_is_loaded_again(tmp_path, blobs):
    reg = Registry(tmp_path / "cache")
    reg.add_version("m", 1, blobs[0])
    resolver = ModelResolver([reg])
    assert resolver.load("m@1").sha256 == hashlib.sha256(blobs[0]).digest()
    reg.add_version("m", 1, blobs[1])  # a cache refilled from a registry recreated under the same URL
    assert resolver.load("m@1").sha256 == hashlib.sha256(blobs[1]).digest()
    assert reg.load("m") is reg.load("m@1")


def test_load_model_keeps_one_copy_of_builtin_models():
    assert codec.load_model("default") is load_model("default") is BUILTIN.load("default")
    assert load_model("default", sources=[BUILTIN]) is codec.load_model("default")


def test_load_model_with_explicit_sources(blobs):
    a = MemorySource("mem", {"aerial": {4: blobs[0]}})
    chain = [BUILTIN, a]
    loaded = load_model("aerial", sources=chain)
    assert loaded.model_id == "aerial@4" and load_model("aerial@4", sources=chain) is loaded
    with pytest.raises(ModelNotFoundError, match="no model named 'aerial'"):
        codec.load_model("aerial")  # nothing is registered process-wide
