"""The Gradio front end (``bonefrac ui``): it calls Triton over gRPC through ``bonefrac.client``
and never loads a model itself. Not built yet: see the README's roadmap."""
