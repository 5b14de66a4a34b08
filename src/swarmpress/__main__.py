"""`python -m swarmpress`: the same command as the `swarmpress` script."""

from swarmpress.cli import main

if __name__ == "__main__":
    main()
