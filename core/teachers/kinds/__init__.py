"""Teacher kinds, one module per kind, named like it (registry "teacher kind", plugin package).

A new kind: ``core/teachers/kinds/<name>.py`` (``-`` in the name becomes ``_`` in the file) with a
:class:`core.teachers.base.TeacherKind` subclass decorated ``@TEACHER_KINDS.register("<name>")``,
and its test. ``teacher.kind``, bench suites, ``atesc convert --kind`` and ``atesc diagnose``
accept the name from then on.
"""
