"""The default model's recipe and the scripts that build it (not part of either distribution).

Run them as modules from the repository root, e.g. ``python -m models.train_default``, so that
they import one another as ``models.training_text`` and so on; tests and ``bench/`` import them the
same way.
"""
