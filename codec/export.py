"""``python -m codec.export`` (the README's command): runs :func:`codec.training.export.main`."""

from codec.training.export import main

if __name__ == "__main__":
    main()
