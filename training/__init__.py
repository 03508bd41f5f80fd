"""Training side of PreZoo: data, selector, trainers, evaluation, search."""
