# The app on a CPU (a Docker Space on CPU hardware, or any machine with Docker): the embedded model by
# default, or NSCVF_MODEL=<hub id> at run time (downloaded then; app.py turns offline mode on only for a
# local model). The same install as a Gradio-SDK Space: requirements.txt and a plain checkout, not pip
# install of the repository. For a GPU use Dockerfile.gpu; ZeroGPU exists only for Gradio-SDK Spaces.
#   docker build -t nscvf . && docker run -p 7860:7860 nscvf
FROM python:3.11-slim
RUN useradd -m -u 1000 user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 \
    NSCVF_DATA_DIR=/home/user/app/data NUMBA_CACHE_DIR=/home/user/app/data/numba
WORKDIR /home/user/app
COPY --chown=user requirements.txt ./
# The CPU wheel first: requirements.txt's plain "torch" would pull the CUDA build (GBs) on Linux.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir -r requirements.txt
COPY --chown=user . .
USER user
EXPOSE 7860
CMD ["python", "app.py"]
