"""``python -m slp_pipeline.cli``: the ``slp`` command without the console script."""

import sys

from slp_pipeline.cli import main

sys.exit(main())
