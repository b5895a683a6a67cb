"""The app's operations on a session, without Gradio: the only importers of the engine's chain (imports
``nscvf``, ``webapp.state`` and ``webapp.service``)."""
