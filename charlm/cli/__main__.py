"""`python -m charlm.cli`: the same as the `charlm` command."""

from charlm.cli import main

main()
