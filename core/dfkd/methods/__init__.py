"""The DFKD methods, one module per method, named like it (registry "dfkd method", plugin package).

A new method: ``core/dfkd/methods/<name>.py`` with a :class:`core.dfkd.base.Synthesizer` subclass
decorated ``@SYNTHESIZERS.register("<name>")``, and its test. ``dfkd.method`` and bench suites
accept the name from then on.
"""
