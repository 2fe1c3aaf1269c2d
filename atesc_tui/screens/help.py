"""`?`: what every key does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# atesc-tui

| key | action |
|---|---|
| `n` | new run: pick a preset, edit it, launch |
| `enter` | open the run under the cursor (monitor) |
| `space` | mark a run for comparison |
| `c` | compare the marked runs (or the two newest) |
| `s` | stop the run (SIGINT: the trainer checkpoints, then exits) |
| `r` | resume a stopped run from its latest checkpoint |
| `1` / `2` | monitor: charts / samples and event log |
| `ctrl+l` | new run: launch (shows the diff against the preset first) |
| `ctrl+p` | command palette (every action above, and themes) |
| `escape` | back |
| `?` | this help |
| `q` | quit (asks first while runs started here are alive; they keep running) |

Runs are separate processes writing `events.jsonl` in their run directory; this app only
reads them, so it can attach to runs started with `atesc run` and quitting leaves them running.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 76; max-width: 100%; height: auto; max-height: 100%; border: thick $primary; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Markdown(HELP)
