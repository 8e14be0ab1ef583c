import sys

from seqtune.cli import main

sys.exit(main())
