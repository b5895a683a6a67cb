# A Docker Space (or any machine with Docker): the app on the embedded model, CPU.
# For a GPU Space use the Gradio SDK (README metadata) instead; ZeroGPU works only there.
FROM python:3.11-slim
RUN useradd -m -u 1000 user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
    NSCVF_DATA_DIR=/home/user/app/data NUMBA_CACHE_DIR=/home/user/app/data/numba
WORKDIR /home/user/app
COPY --chown=user pyproject.toml README.md ./
COPY --chown=user nscvf ./nscvf
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir .
COPY --chown=user . .
USER user
EXPOSE 7860
CMD ["python", "app.py"]
