"""The built-in model families, one module or package each, which registers itself (`zoo.family.register_family`);
`zoo.family` imports every module here on the first lookup, so a new family is one new module here (and its tests)."""
