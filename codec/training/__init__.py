"""Making models: everything between a folder of images and a registered, finalised model.

    data.py      which files train and which are held out (Kodak refused); the one random-crop sampler
    train.py     the training loop (TrainConfig, train_step, weights-only checkpoints that resume)
    export.py    checkpoint → finalised model (calibrated on training crops) → a registry version
    evaluate.py  rate–distortion of models with real streams, BD-rate against a reference

Not imported by ``codec`` itself: encoding and decoding never load the training code.
``python -m codec.train`` and ``python -m codec.export`` run :mod:`.train` and :mod:`.export`.
"""
