"""`python -m exprengine.cli`: the `exprengine` command."""
import sys

from exprengine.cli import main

sys.exit(main())
