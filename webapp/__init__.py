"""The NSCVF web app as a package (``app.py`` is the Space's entry file and calls
:func:`webapp.page.app.launch`). Four layers, each importing only those below it (ARCHITECTURE.md;
enforced by tests/test_layers.py):

- ``state``: settings, the process's runtime, sessions, records, the UMAP worker. No Gradio, runs no request.
- ``service``: the operations on a session (forget, teach, compare, timeline, ask, the showcase). No Gradio;
  the only code that drives the engine's chain.
- ``views``: pure functions, a record -> tables, notes, figures, status lines. No Gradio, no service.
- ``page``: the Gradio page, one module per section, composed by ``page.app``. The only code importing Gradio.

It imports :mod:`nscvf`, never the reverse; the service and the views are tested without a server
(tests/test_webapp.py); tests that start the app are under tests/server/.
"""
