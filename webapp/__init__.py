"""The NSCVF web app as a package (``app.py`` is the Space's entry file and calls :func:`webapp.ui.launch`).

Reads downward: ``settings`` -> ``records`` / ``sessions`` / ``runtime`` -> ``service`` -> ``views`` ->
``handlers`` -> ``ui``. It imports :mod:`nscvf`, never the reverse; only ``handlers`` and ``ui`` import
Gradio, so the service and the views are tested without a server (tests/test_webapp.py).
"""
