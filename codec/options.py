"""What a caller may ask of the encoder, validated once: :class:`RateTarget` (the three rate modes and the
38 dB default) and :class:`EncodeOptions` (everything else an encode takes). Torch-free: the pipeline's job
config validates with these, and a stream header's mode byte indexes :data:`MODES`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace

from codec.format.georef import GeoInfo
from codec.format.raster import NODATA_MODES
from codec.format.tiles import DEFAULT_TILE, check_tile_size

MODES = ("quality", "target_psnr", "target_bpp", "max_error")  # the order is the stream's mode byte: append only
RATE_KEYWORDS = ("target_psnr", "quality", "target_bpp", "max_error")
DEFAULT_TARGET_PSNR = 38.0
# encode effort level → latent-refinement steps per tile (codec.families.hyperprior.refine; bench/effort.py)
EFFORT_ITERATIONS = (0, 50, 200, 1000)


def check_effort(effort) -> int:
    """``effort`` when it is an encode effort level (an int in [0, len(EFFORT_ITERATIONS)); else ValueError."""
    if isinstance(effort, bool) or not isinstance(effort, int) or not 0 <= effort < len(EFFORT_ITERATIONS):
        raise ValueError(f"effort must be an integer in [0, {len(EFFORT_ITERATIONS) - 1}], got {effort!r}")
    return effort


@dataclass(frozen=True)
class RateTarget:
    """What the caller asked for: ``mode`` (one of :data:`MODES`) and its ``value``; valid by construction."""

    mode: str
    value: float

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown rate-control mode {self.mode!r} (one of {', '.join(MODES)})")
        try:
            value = float(self.value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.mode} must be a number, got {self.value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{self.mode} must be a finite number, got {value}")
        if self.mode == "quality" and not 0.0 <= value <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {value}")
        if self.mode == "target_bpp" and not value > 0:
            raise ValueError(f"target_bpp must be positive, got {value}")
        if self.mode == "max_error" and not (value.is_integer() and 0 <= value <= 65535):
            raise ValueError(f"max_error must be a whole number of sample units in [0, 65535], got {self.value!r}")
        object.__setattr__(self, "value", value)

    @property
    def max_error(self) -> int | None:
        """The bound of a ``max_error`` target (every sample within ±it; 0: lossless), else None."""
        return int(self.value) if self.mode == "max_error" else None

    @classmethod
    def from_options(cls, target_psnr: float | None = None, quality: float | None = None,
                     target_bpp: float | None = None, max_error: int | None = None) -> "RateTarget":
        """At most one of the four (None: not given); none means ``target_psnr`` = :data:`DEFAULT_TARGET_PSNR`."""
        given = [(m, v) for m, v in zip(RATE_KEYWORDS, (target_psnr, quality, target_bpp, max_error)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(RATE_KEYWORDS)} (got {', '.join(m for m, _ in given)})")
        if max_error is not None and (isinstance(max_error, bool) or not isinstance(max_error, numbers.Integral)):
            raise ValueError(f"max_error must be an integer number of sample units, got {max_error!r}")
        return cls(*given[0]) if given else cls("target_psnr", DEFAULT_TARGET_PSNR)



@dataclass(frozen=True)
class EncodeOptions:
    """Every option of an encode besides the image and the model, checked once at construction (a bad one is
    a ValueError naming it). ``codec.encode(image, model, options)``; callers with keywords get the same
    object from :meth:`from_keywords`."""

    target: RateTarget = field(default_factory=lambda: RateTarget("target_psnr", DEFAULT_TARGET_PSNR))
    tile_size: int = DEFAULT_TILE
    device: str = "cpu"
    half: bool = False  # float16 transforms (GPUs)
    batch_size: int = 8
    entropy_workers: int = 0  # range-code in that many CPU processes
    overlap_coding: bool | None = None  # None: the engine's default (codec.families.hyperprior.engine)
    name: str = "image"  # how errors name the image
    nodata: int | tuple | None = None  # rasters: the nodata value (one for every band, or one per band; None: none)
    nodata_mode: str = "band"  # "band": GDAL's rule, a sample equal to ITS band's value is nodata (the default);
    #                            "pixel": a pixel is nodata only when EVERY band equals the value (older streams)
    bit_depth: int | None = None
    band_names: tuple[str, ...] | None = None
    lossless: bool = False  # every tile exact
    lossless_fallback: bool = True  # target_psnr rasters: tiles the model cannot reach are coded exactly
    tile_coder: str | None = None  # code every tile with this tile coder (codec.tilecoders); lossless: "jxl_exact"
    tools: tuple[str, ...] | None = None  # target_psnr: per-tile tools besides the learned one (codec.toolchoice); None: all
    georef: GeoInfo | None = None  # georeferencing the stream carries (codec.format.georef; v4 block); None: none
    effort: int = 0  # encode effort: 0 = no latent refinement; higher refines longer (EFFORT_ITERATIONS); from 1 every
    #                  per-tile lossy tool is tried (codec.toolchoice.THOROUGH_EFFORT)

    def __post_init__(self):
        if not isinstance(self.target, RateTarget):
            raise ValueError(f"target must be a RateTarget, got {type(self.target).__name__}")
        check_tile_size(self.tile_size)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.entropy_workers, int) or self.entropy_workers < 0:
            raise ValueError(f"entropy_workers must be a non-negative integer, got {self.entropy_workers!r}")
        if isinstance(self.nodata, (list, tuple)):
            if not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.nodata):
                raise ValueError(f"nodata per band must be numbers or None, got {self.nodata!r}")
            object.__setattr__(self, "nodata", tuple(self.nodata))
        elif self.nodata is not None and not isinstance(self.nodata, (int, float)):
            raise ValueError(f"nodata must be a number, got {self.nodata!r}")  # its range: the image's dtype (describe)
        if self.nodata_mode not in NODATA_MODES:
            raise ValueError(f"nodata_mode must be one of {', '.join(NODATA_MODES)}, got {self.nodata_mode!r}")
        if self.bit_depth is not None and not (isinstance(self.bit_depth, int) and 1 <= self.bit_depth <= 16):
            raise ValueError(f"bit_depth must be an integer in [1, 16], got {self.bit_depth!r}")
        if self.tile_coder is not None and not isinstance(self.tile_coder, str):
            raise ValueError(f"tile_coder must be a tile coder's name, got {self.tile_coder!r}")
        check_effort(self.effort)
        if self.band_names is not None:
            object.__setattr__(self, "band_names", tuple(str(n) for n in self.band_names))
        if self.georef is not None and not isinstance(self.georef, GeoInfo):
            raise ValueError(f"georef must be a codec.format.georef.GeoInfo, got {type(self.georef).__name__}")
        if self.tools is not None:
            if isinstance(self.tools, str) or not all(isinstance(t, str) for t in self.tools):
                raise ValueError(f"tools must be a sequence of tile coder names, got {self.tools!r}")
            object.__setattr__(self, "tools", tuple(self.tools))

    @classmethod
    def from_keywords(cls, target_psnr: float | None = None, quality: float | None = None,
                      target_bpp: float | None = None, target: RateTarget | None = None,
                      max_error: int | None = None, **options) -> "EncodeOptions":
        """The options of ``codec.encode``'s keywords: at most one of the four rate keywords or ``target``."""
        rates = (target_psnr, quality, target_bpp, max_error)
        if target is None:
            target = RateTarget.from_options(*rates)
        elif any(v is not None for v in rates):
            raise ValueError(f"give target or one of {', '.join(RATE_KEYWORDS)}, not both")
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown encode option(s): {', '.join(sorted(unknown))}")
        return cls(target=target, **options)

    @property
    def coder_name(self) -> str | None:
        """The tile coder every tile is coded with, when not the learned family's."""
        return "jxl_exact" if self.lossless else self.tile_coder

    def with_(self, **changes) -> "EncodeOptions":
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class DecodeOptions:
    """How a stream is decoded (never what it decodes to: any device gives the same pixels)."""

    device: str = "cpu"
    half: bool = False
    batch_size: int = 8
    entropy_workers: int = 0
    overlap_coding: bool | None = None
    max_pixels: int = 2**31  # the decompression-bomb guard (codec.images.imageio.DEFAULT_MAX_PIXELS)
    max_bits: float | None = None  # progressive preview, for families that support it

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive integer, got {self.max_pixels!r}")
