"""The minnen2018 model family: Minnen et al.'s tiled, spatially adaptive codec (ICIP 2018).

32×32 sub-tiles in raster order, each predicted from its decoded neighbours by a context network
and its residual coded progressively (128 bits an iteration) by a conv-LSTM auto-encoder, stopping
per sub-tile at the target quality. :mod:`.model` holds the networks, :mod:`.coding` the coding,
:mod:`.train` the trainer. Streams are ordinary TLIC streams; :mod:`codec.api` dispatches on
``model.family``.
"""

FAMILY = "minnen2018"

QUALITY_NOTE = ("{model} is a minnen2018 model, below JPEG quality at equal size ({db}; JPEG 29.7 dB at 0.53 bpp on "
                "Kodak): for archiving use the default model")
MEASURED = {"minnen2018@1": "21.9 dB at 0.48 bpp on Kodak 03/05/23 (bench/results/minnen2018_v1.log)",
            "minnen2018@2": "25.2 dB at 0.54 bpp on Kodak (bench/results/minnen2018_kodak24.log)"}


def chosen_warning(model) -> str | None:
    """The warning the CLI and the archival job give when a minnen2018 model is chosen, until the family
    reaches JPEG parity (issue 29); None for any other family. ``model``: a LoadedModel."""
    if getattr(model.model, "family", None) != FAMILY:
        return None
    return "warning: " + QUALITY_NOTE.format(model=model.model_id, db=MEASURED.get(model.model_id, "not measured"))
