"""`python -m qwen25_rl` is the `qwen25-rl` command."""

import sys

from qwen25_rl.cli import main

sys.exit(main())
