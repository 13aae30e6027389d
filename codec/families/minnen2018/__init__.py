"""The minnen2018 model family: Minnen et al.'s tiled, spatially adaptive codec (ICIP 2018).

32×32 sub-tiles in raster order, each predicted from its decoded neighbours by a context network
and its residual coded progressively (128 bits an iteration) by a conv-LSTM auto-encoder, stopping
per sub-tile at the target quality. :mod:`.model` holds the networks, :mod:`.coding` the coding,
:mod:`.train` the trainer. Streams are ordinary TLIC streams; :mod:`codec.api` dispatches on
``model.family``.
"""

FAMILY = "minnen2018"
