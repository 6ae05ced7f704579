import sys

from disk_snapshots.cli import main

sys.exit(main())
