"""`python -m core.personas`: check a persona folder, import other tools' files, export a persona."""

import sys

from core.personas.persona import main

sys.exit(main())
