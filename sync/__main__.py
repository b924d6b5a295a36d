"""`python -m sync` is the same as the `amosync` command."""

from __future__ import annotations

from sync.cli import main

if __name__ == "__main__":
    main()
