# The tuner image: the service, its workloads and Ray, for every node of docker-compose.yml.
FROM python:3.11-slim

# PyPI's torch for Linux is the CUDA build the GPU workers need; pass
# --build-arg TORCH="torch==2.13.0+cpu" (with a CPU index) for a CPU-only image.
ARG TORCH="torch>=2.2"

RUN useradd --create-home --uid 1000 tuner
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY workers ./workers
COPY search_spaces ./search_spaces
RUN pip install --no-cache-dir "$TORCH" && pip install --no-cache-dir ".[postgres]"

USER tuner
ENV PYTHONUNBUFFERED=1
CMD ["tuner", "--help"]
