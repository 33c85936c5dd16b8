"""``python -m tuckerlab`` runs the command line interface."""
from tuckerlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
