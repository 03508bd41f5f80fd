"""`python -m export`: not built yet (issue #5). Exits with a clear message instead of a traceback."""

import sys

print("python -m export: export and Hub push are not built yet (issue #5). "
      "Available now: python -m zoo, python -m training select.", file=sys.stderr)
sys.exit(2)
