import sys

from handssca import main

sys.exit(main())
