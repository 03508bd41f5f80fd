"""`python -m server`: not built yet (issue #6). Exits with a clear message instead of a traceback."""

import sys

print("python -m server: the server is not built yet (issue #6). "
      "Available now: python -m zoo, python -m training select.", file=sys.stderr)
sys.exit(2)
