"""``python -m codec.train`` (the README's command): runs :func:`codec.training.train.main`."""

from codec.training.train import main


if __name__ == "__main__":
    main()
