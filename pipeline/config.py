"""Job options as pydantic models: validated at the edge, loadable from YAML/JSON."""

from __future__ import annotations

import json
import os
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator


class StorageOptions(BaseModel):
    """How to reach object storage. Unset fields come from the standard AWS variables."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(default_factory=lambda: os.environ.get("AWS_ENDPOINT_URL") or None)
    region: str | None = Field(default_factory=lambda: os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None)
    access_key: SecretStr | None = Field(default_factory=lambda: _secret("AWS_ACCESS_KEY_ID"))
    secret_key: SecretStr | None = Field(default_factory=lambda: _secret("AWS_SECRET_ACCESS_KEY"))
    anonymous: bool = False

    def s3fs_kwargs(self) -> dict:
        kw: dict = {"anon": self.anonymous, "use_listings_cache": False}
        if self.access_key and self.secret_key:
            kw.update(key=self.access_key.get_secret_value(), secret=self.secret_key.get_secret_value())
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
            kw["config_kwargs"] = {"s3": {"addressing_style": "path"}}
        if self.region:
            kw.setdefault("client_kwargs", {})["region_name"] = self.region
        return kw


def _secret(name: str) -> SecretStr | None:
    v = os.environ.get(name)
    return SecretStr(v) if v else None


def describe_errors(exc: ValidationError) -> str:
    """One line per invalid option, for a job's stderr."""
    return "\n".join(f"  {'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors())


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


class JobConfig(BaseModel):
    """A job's options: unknown names are errors; a YAML/JSON file gives defaults that flags override."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_cli(cls, flags: dict, config_file: str | Path | None = None, endpoint_url: str | None = None):
        """From parsed flags (None = not given), an optional config file and ``--endpoint-url``."""
        given = {k: v for k, v in flags.items() if v is not None}
        data = cls.read_file(config_file) if config_file else {}
        if endpoint_url:  # overrides one field of the file's storage block, not the whole block
            data["storage"] = {**(data.get("storage") or {}), "endpoint_url": endpoint_url}
        return cls(**{**data, **given})

    @staticmethod
    def read_file(path: str | Path) -> dict:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(text) or {}
        return json.loads(text)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "JobConfig":
        return cls(**{**cls.read_file(path), **overrides})


class CompressJobConfig(JobConfig):
    """Options of ``jobs/compress_bucket.py`` (flags, or a YAML/JSON file with the same names)."""

    input: str = Field(description="URL prefix or glob of the images: s3://bucket/prefix/, /local/dir, ...")
    output: str = Field(description="URL prefix of the archive (records/, stats/, _manifests/ go below)")
    target_psnr: float | None = None
    quality: float | None = None
    target_bpp: float | None = None
    max_error: int | None = Field(default=None, description="every sample within ±E of the source (codec.encode's "
                                  "max_error; 0: lossless); verification refuses a record that exceeds it")
    model: str = "default"
    model_registry: str | None = Field(default=None, description="URL of a model registry on object storage "
                                       "(models trained by jobs/train_codec.py); built-in names are found without it")
    raster_model: str | None = Field(default=None, description="model for rasters (16-bit, multi-band or with "
                                     "nodata; 8-bit gray/RGB/RGBA images use --model); default: the codec's "
                                     "choice (codec.registry.default_model_name: satellite where a source has it)")
    lossless: bool = Field(default=False, description="code every tile losslessly: restores are bit-exact")
    nodata: int | None = Field(default=None, ge=-32768, le=65535, description="nodata value of 16-bit or "
                               "multi-band rasters whose file names none (a GeoTIFF's GDAL_NODATA tag wins), by "
                               "GDAL's per-band rule (a sample equal to it is nodata in its band); negative values "
                               "apply to int16 rasters only; 8-bit gray/RGB/RGBA images are never given one")
    tile_size: int = 256
    effort: int = Field(default=0, description="encode effort: 0 = no latent refinement; 1..3 refine "
                        "each tile's latents longer for fewer bytes (codec.options.EFFORT_ITERATIONS; CPU costs "
                        "in bench/results/effort.log)")
    replicas: int | None = Field(default=None, description="codec replicas; default GPUs / gpus_per_replica on a GPU "
                                 "cluster, else one per 4 CPUs")
    gpus_per_replica: float = 1.0
    batch_size: int = Field(default=4, ge=1, description="images per replica call")
    replica_start_timeout_s: int = Field(default=900, ge=1, description="wait this long for all replicas (GPU nodes may autoscale)")
    verify: bool = True
    max_error_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    max_pixels: int = Field(default=1 << 31, ge=1, description="decompression-bomb limit per image")
    max_image_memory: int = Field(default=24 << 30, ge=1 << 20, description="refuse (too_large) an image whose "
                                  "estimated working set (codec.images.imageio.working_set_bytes) is larger")
    window_over_bytes: int = Field(default=512 << 20, ge=0, description="a source larger than this is not fetched "
                                   "into memory: its replica copies it to --scratch-dir and codes it window by window "
                                   "(TIFF rasters; codec.images.windowed), so a scene larger than memory is archived")
    scratch_dir: str | None = Field(default=None, description="local folder for those copies (default: the system's "
                                    "temporary folder); needs room for the largest source")
    retry_errors: bool = Field(default=False, description="also retry keys whose last row is a permanent error "
                               "(transient fetch errors and changed sources are retried anyway)")
    fetch_attempts: int = Field(default=4, ge=1, description="GETs per object on transient storage errors (the only "
                                "retry layer: botocore's and s3fs's are off for fetches); a fetch task whose worker "
                                "dies is re-run at most stages.fetch.FETCH_TASK_RETRIES times")
    write_retry_s: float = Field(default=60.0, ge=0, description="retry a failing archive write (503/500, resets, "
                                 "timeouts) this long, with backoff and jitter, before the job exits 4")
    max_replica_restarts: int = Field(default=20, ge=0, description="restarts per replica before the job fails")
    cluster_retries: int = Field(default=2, ge=0, description="times the rest of a run is run again after the "
                                 "cluster lost a node, a replica or the blocks it held (what arrived is committed first)")
    segment_rows: int = Field(default=256, ge=1, description="images per committed Parquet segment")
    segment_bytes: int = Field(default=256 << 20, ge=1, description="bitstream bytes per committed Parquet segment")
    lease_ttl_s: float = Field(default=120.0, ge=5, description="the output's writer lease lives this long unrenewed "
                               "(renewed every quarter of it): after a crash, the next run can start once it ran out")
    wait_for_lease_s: float = Field(default=0.0, ge=0, description="wait up to this long for a held lease to expire "
                                    "(a crashed run's), with progress every 10 s; a holder on this host whose process "
                                    "is gone is taken over at once. 0: a held output exits 5 at once")
    run_id: str = Field(default_factory=new_run_id, pattern=r"^[A-Za-z0-9._-]{1,128}$")
    storage: StorageOptions = Field(default_factory=StorageOptions)
    extensions: list[str] = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"]

    @field_validator("tile_size")
    @classmethod
    def _tile(cls, v: int) -> int:
        from codec.format.tiles import check_tile_size

        return check_tile_size(v)

    @field_validator("effort")
    @classmethod
    def _effort(cls, v: int) -> int:
        from codec.options import check_effort

        return check_effort(v)

    @field_validator("gpus_per_replica")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if not 0 < v <= 8:
            raise ValueError("gpus_per_replica must be in (0, 8]")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> "CompressJobConfig":
        # the codec's rule (one of four, 38 dB by default), stated once in codec.options
        target = self.rate_target
        setattr(self, target.mode, target.max_error if target.mode == "max_error" else target.value)
        if self.input.rstrip("/") == self.output.rstrip("/"):
            raise ValueError("output must differ from input")
        return self

    @property
    def rate_target(self):
        """The job's :class:`codec.options.RateTarget` (torch-free: the driver validates without the model)."""
        from codec.options import RateTarget

        return RateTarget.from_options(target_psnr=self.target_psnr, quality=self.quality, target_bpp=self.target_bpp,
                                       max_error=self.max_error)

    def encode_options(self):
        """The :class:`codec.options.EncodeOptions` every image of the job starts from, validated once; a
        replica adds only what belongs to the image (its name, nodata, bit depth, band names) and its device."""
        from codec.options import EncodeOptions

        return EncodeOptions(target=self.rate_target, tile_size=self.tile_size, lossless=self.lossless,
                             effort=self.effort)

    @property
    def mode(self) -> tuple[str, float]:
        """(mode, value) of :attr:`rate_target`, as the stats columns and ``codec.encode`` take it."""
        target = self.rate_target
        return target.mode, target.value


class RestoreJobConfig(JobConfig):
    """Options of ``jobs/restore.py``: which committed records to decode, and where to write the images."""

    archive: str = Field(description="URL of the archive (the compress job's --output)")
    output: str = Field(description="URL prefix for the restored images (a key's path below it, new suffix)")
    keys: list[str] | None = Field(default=None, description="restore exactly these source keys")
    prefix: str | None = Field(default=None, description="restore every committed key that starts with this")
    region: tuple[int, int, int, int] | None = Field(default=None, description="x,y,w,h: restore only this crop")
    format: Literal["auto", "png", "tiff"] = Field(
        default="auto", description="auto: GeoTIFF for georeferenced records, PNG otherwise")
    plain_tiff: bool = Field(default=False, description="TIFF outputs: a plain tiled GeoTIFF, not a Cloud Optimized GeoTIFF")
    model_registry: str | None = Field(default=None, description="where to find models that are not built in")
    replicas: int | None = Field(default=None, description="restore replicas; default as the compress job's")
    gpus_per_replica: float = Field(default=1.0, gt=0, le=8)
    batch_size: int = Field(default=4, ge=1)
    replica_start_timeout_s: int = Field(default=900, ge=1)
    restore_id: str = Field(default_factory=new_run_id)
    storage: StorageOptions = Field(default_factory=StorageOptions)

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, v):
        if isinstance(v, str):
            parts = v.split(",")
            if len(parts) != 4:
                raise ValueError(f"region must be x,y,w,h, got {v!r}")
            v = tuple(int(p) for p in parts)
        if v is not None and (min(v[:2]) < 0 or min(v[2:]) <= 0):
            raise ValueError(f"region {tuple(v)}: x, y must be ≥ 0 and w, h > 0")
        return v

    @model_validator(mode="after")
    def _selection(self) -> "RestoreJobConfig":
        if self.keys is not None and self.prefix is not None:
            raise ValueError("give --keys or --prefix, not both")
        if self.archive.rstrip("/") == self.output.rstrip("/"):
            raise ValueError("output must differ from the archive")
        return self


class ReportJobConfig(JobConfig):
    """Options of ``jobs/report.py``."""

    stats: str = Field(description="URL of the archive's stats/ (or of the archive itself)")
    since: date | None = Field(default=None, description="only rows archived on or after this day")
    group_by: Literal["prefix", "day", "model", "run", "product"] | None = None
    html: str | None = Field(default=None, description="write the HTML report here (a path or URL)")
    image: str | None = Field(default=None, description="key whose bit allocation the HTML shows (default: the most tiles)")
    model_registry: str | None = Field(default=None, description="where the shown record's model is, if not built in")
    storage: StorageOptions = Field(default_factory=StorageOptions)


class TrainJobConfig(JobConfig):
    """Options of ``jobs/train_codec.py``: domain (re)training with Ray Train."""

    data: str = Field(description="URL prefix of the training images")
    holdout: str | None = Field(default=None, description="URL prefix of held-out images; default: a split of --data")
    holdout_fraction: float = Field(default=0.15, gt=0, lt=1, description="share of --data held out (by file hash)")
    name: str = Field(description="registry name of the new model, e.g. aerial")
    base: str | None = Field(default="default", description="model to fine-tune; None trains from scratch")
    registry: str = Field(description="URL of the model registry on object storage")
    storage_path: str = Field(description="URL where Ray Train keeps the run's checkpoints (resume = same run_name)")
    run_name: str = Field(default_factory=lambda: "train-" + new_run_id())
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1, gt=0)
    steps: int = Field(default=2000, ge=1)
    batch_size: int = Field(default=8, ge=1, description="crops per worker per step")
    crop: int = Field(default=256, ge=64)
    crops_per_image: int = Field(default=4, ge=1, description="random crops cut from an image per pass")
    lr: float = Field(default=1e-4, gt=0)
    lr_decay_at: tuple[float, ...] = (0.8,)
    checkpoint_every: int = Field(default=100, ge=1)
    max_failures: int = Field(default=3, ge=0, description="worker failures the run survives (resuming from the last checkpoint)")
    eval_images: int | None = Field(default=None, ge=1, description="cap on held-out images evaluated")
    extensions: list[str] = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"]
    storage: StorageOptions = Field(default_factory=StorageOptions)

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: int) -> int:
        if v % 64:
            raise ValueError(f"crop must be a multiple of 64, got {v}")
        return v
