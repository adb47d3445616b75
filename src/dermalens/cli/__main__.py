"""`python -m dermalens.cli`: the same as the `dermalens` command."""

import sys

from dermalens.cli import main

sys.exit(main())
