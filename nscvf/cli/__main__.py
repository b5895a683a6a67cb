"""``python -m nscvf.cli``: the same as the ``nscvf`` console script."""

import sys

from nscvf.cli.main import main

sys.exit(main())
