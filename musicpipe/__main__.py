import sys

from musicpipe.cli import main

sys.exit(main())
