"""`?`: what every key does, how to read the charts, and a glossary. Scrolls at any size."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static

HELP = """\
# atesc-tui

## Keys

| key | action |
|---|---|
| `n` | new run: pick a preset, edit it, launch |
| `enter` | open the run under the cursor (monitor) |
| `space` | mark a run for comparison |
| `c` | compare the marked runs (or the two newest) |
| `s` | stop the run (SIGINT: the trainer checkpoints, then exits) |
| `r` | resume a stopped run from its latest checkpoint |
| `1` / `2` | monitor: charts / samples and event log |
| `e` | charts: cycle EMA smoothing (off, 0.6, 0.9); raw values stay dim behind |
| `l` | charts: log scale for losses and learning rate |
| `ctrl+l` | new run: launch (shows the diff against the preset first) |
| `ctrl+p` | command palette: every action above, and themes |
| `escape` | back |
| `?` | this help (arrows, page keys or the mouse scroll it) |
| `q` | quit; while runs started here are alive it asks: leave them running, stop them, or stay |

## Reading the charts

All charts of a run share one step axis (training iterations). The legend above each chart
gives every series' latest value; move the mouse over a chart to read the values at that step.
Accuracies and shares are in %. Dotted horizontal lines are references (the teacher's own ID
and OOD accuracy); dotted vertical lines mark where the run was stopped and resumed. A gap in
a line means the value does not exist there (e.g. no robust sample in that batch). Where two
lines cross or coincide they are drawn in the text colour (bold), so neither hides the other.
In compare, each run is named by the settings in which the compared runs differ
(`ATEsc on, seed 1`); the table under the charts maps colours to runs.

## Glossary

- **ID (in-distribution)**: the domain the teacher was trained to work on (e.g. MNIST digits).
- **OOD (out-of-distribution)**: the domain a non-transferable teacher was trained to fail on
  (e.g. the same digits with a stamped patch).
- **NTL teacher**: a non-transferable-learning classifier, accurate on ID and wrong on OOD.
  *SL* is an ordinary supervised teacher (the control).
- **DFKD**: data-free knowledge distillation: a generator synthesises inputs from the frozen
  teacher (DFQ, CMI) and the student learns from the teacher's outputs on them.
- **The OOD trap**: with an NTL teacher the generator drifts towards OOD-like samples, so the
  student learns the teacher's misleading OOD behaviour instead of its ID knowledge.
- **ATEsc**: Adversarial Trap Escaping. Each synthetic sample is attacked lightly; an NTL teacher
  is **fragile** (its output flips easily) on ID-like samples and **robust** on OOD-like ones.
- **Fragile (ID-like)**: distilled normally (KD). **Robust (OOD-like)**: the student is pushed
  away from the teacher there (forgetting loss).
- **Split / fragile share**: the share of each synthetic batch ATEsc judges fragile.
  n/a when ATEsc is off.
- **KD loss**: how far the student's outputs are from the teacher's on fragile samples.
- **Forgetting loss**: the term that makes the student unlearn the teacher's OOD behaviour.
- **Generator loss**: what the generator minimises (BN-statistics match, confidence, class
  balance, adversarial disagreement).
- **EMA**: exponential moving average (TensorBoard's smoothing, debiased at the start).

Runs are separate processes writing `events.jsonl` in their run directory; this app only reads
them, so it can attach to runs started with `atesc run`, and quitting leaves them running.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background; }  /* opaque: help is read, not overlaid */
    HelpScreen > VerticalScroll {
        width: 84; max-width: 100%; height: 100%; max-height: 100%;
        border: thick $primary; background: $surface;
    }
    HelpScreen #help-hint { dock: bottom; height: 1; color: $text-muted; background: $boost; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-scroll"):
            yield Markdown(HELP)
        yield Static("arrows / page keys scroll, escape closes", id="help-hint")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
