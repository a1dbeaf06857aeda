import sys

from handssca.cli import main

sys.exit(main())
