"""``python -m medrobust`` runs the command line."""
import sys

from medrobust.cli import main

sys.exit(main())
