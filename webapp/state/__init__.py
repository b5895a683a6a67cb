"""The app's state: settings, the process's runtime, sessions, records, the UMAP worker (no Gradio; runs no
request; imports only ``nscvf`` and ``webapp.state``)."""
