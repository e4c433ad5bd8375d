"""The application layer: the ``skdynloss`` command, the demo's experiments and the
reproductions of the paper's figures.

This code writes result files, reads git and schedules worker processes; it builds on
the package a user imports (the estimator, the engine, the searches, plotting), which
never imports it. Its modules are also reachable under their older names
``skdynloss.cli``, ``skdynloss.experiments`` and ``skdynloss.reproduce``.
"""
