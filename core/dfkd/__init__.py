"""Data-free KD synthesizers: a generator trained against a frozen teacher (registry "dfkd method")."""

from .base import SYNTHESIZERS, GeneratorStep, Synthesizer, create_synthesizer
from .bn_hooks import BNStatsHooks
from .methods.cmi import CMISynthesizer
from .methods.dfq import DFQSynthesizer

__all__ = [
    "SYNTHESIZERS",
    "BNStatsHooks",
    "CMISynthesizer",
    "DFQSynthesizer",
    "GeneratorStep",
    "Synthesizer",
    "create_synthesizer",
]
