"""atesc-tui user interfaces: the ``atesc`` CLI, rich live panels and the ``atesc-tui`` Textual app."""
