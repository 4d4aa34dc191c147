"""`segwise serve`: a trained model behind HTTP (`create_app`), with micro-batching and a browser viewer."""

from segwise.serve.app import create_app

__all__ = ["create_app"]
