"""`python -m exprengine ...` is the `exprengine` command."""
import sys

from exprengine.cli import main

sys.exit(main())
