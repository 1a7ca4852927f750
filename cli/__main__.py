"""`python -m cli`: the `meridian` command."""

from cli.main import main

raise SystemExit(main())
