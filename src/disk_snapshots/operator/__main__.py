"""``python -m disk_snapshots.operator``: the ``disk-snapshots`` console script."""

import sys

from disk_snapshots.operator.cli import main

if __name__ == "__main__":  # importing it (pkgutil walks, say) runs nothing
    sys.exit(main())
