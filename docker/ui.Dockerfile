# The Gradio UI: talks to Triton over gRPC, loads no model. The [ui] extra, no torch.
# Checked offline only (tests/test_packaging.py); never built yet.
FROM python:3.11-slim
WORKDIR /opt/bonefrac
COPY pyproject.toml README.md ./
COPY bonefrac ./bonefrac
COPY client ./client
COPY export ./export
COPY ui ./ui
COPY benchmarks ./benchmarks
COPY train ./train
RUN pip install --no-cache-dir '.[ui]'
USER nobody
EXPOSE 7860
