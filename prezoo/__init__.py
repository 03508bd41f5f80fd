"""PreZoo's one command, `prezoo` (prezoo/__main__.py): every `python -m zoo|training|export|server` entry point under
one name that does not depend on the working folder."""
