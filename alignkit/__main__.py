import sys

from alignkit.cli import main

sys.exit(main())
