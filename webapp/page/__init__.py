"""The Gradio page: one module per section (layout, handlers, events) and ``app`` (compose, launch). The
only code of the project that imports Gradio."""
