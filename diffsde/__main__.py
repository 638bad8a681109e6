"""``python -m diffsde``: runs the ``diffsde`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
