"""`python -m swarmpress.cli`: the `swarmpress` command (the arena's workers run this way)."""

from swarmpress.cli import main

if __name__ == "__main__":
    main()
