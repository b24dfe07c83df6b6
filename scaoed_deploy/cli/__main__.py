"""``python -m scaoed_deploy.cli``: the same as the ``scaoed-deploy`` command."""

import sys

from .main import main

sys.exit(main())
