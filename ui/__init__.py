"""The Gradio chat UI over :mod:`rag`: ``rag ui`` starts it (see :func:`ui.app.serve`)."""

import os

# Set before gradio is first imported (by ui.app): the UI never calls home.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
