"""`python -m localbosh`: see localbosh.cli."""

import sys

from localbosh.cli import main

sys.exit(main())
