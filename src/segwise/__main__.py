"""`python -m segwise` = the `segwise` command."""

import sys

from segwise.cli import main

sys.exit(main())
