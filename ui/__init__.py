"""The Gradio demo page (``bonefrac ui`` / ``bonefrac demo``): it calls Triton over gRPC through
``bonefrac.client`` and never loads a model itself. See :mod:`bonefrac.ui.app`."""
