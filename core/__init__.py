"""atesc-tui core library: config, data, models, NTL teachers, DFKD, ATEsc, trainer, events, checkpoints.

Nothing in here imports from ``atesc_tui`` (the user interface); notebooks can use it directly.
"""

__version__ = "0.1.0"
