"""Helpers shared by the tests (imported as ``support.<module>``; tests/conftest.py puts tests/ on the path):
``photos`` (photo-like images the embedded model never saw), ``app_server`` (start ``python app.py``),
``browser`` (the Chromium the browser tests drive)."""
