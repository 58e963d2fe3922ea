"""`python -m lookout`: the same as the `lookout` command."""

import sys

from lookout.cli.main import main

sys.exit(main())
