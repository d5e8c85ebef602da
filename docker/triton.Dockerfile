# NVIDIA's tritonserver image plus the bonefrac package, which the Python-backend pre- and
# post-processing models import. The detector runs on Triton's own ONNX Runtime / TensorRT
# backends, so no torch and no onnxruntime are installed here.
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
RUN python3 -m pip install --no-cache-dir --no-deps . \
 && python3 -m pip install --no-cache-dir "numpy<2" "pillow>=10" \
      "opencv-python-headless==4.11.0.86" "tritonclient[grpc]>=2.51" "pyyaml>=6"
