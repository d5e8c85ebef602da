# NVIDIA's tritonserver image plus the bonefrac package, which the Python-backend pre- and
# post-processing models import. The detector runs on Triton's own ONNX Runtime / TensorRT
# backends, so no torch and no onnxruntime are installed here: bonefrac goes in without its base
# dependencies, then exactly its [triton] extra (pyproject.toml), read from the installed metadata.
# Checked offline only (tests/test_packaging.py); never built or run on a GPU node yet.
ARG TRITON_IMAGE
FROM ${TRITON_IMAGE}
WORKDIR /opt/bonefrac
COPY pyproject.toml README.md ./
COPY bonefrac ./bonefrac
COPY client ./client
COPY export ./export
COPY ui ./ui
COPY benchmarks ./benchmarks
COPY train ./train
COPY docker/extra_requirements.py ./docker/
RUN python3 -m pip install --no-cache-dir --no-deps . \
 && python3 docker/extra_requirements.py bonefrac triton > /tmp/triton-requirements.txt \
 && python3 -m pip install --no-cache-dir -r /tmp/triton-requirements.txt \
 && rm /tmp/triton-requirements.txt
