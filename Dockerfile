# The tuner image: the service, its workloads and Ray, for every node of docker-compose.yml.
FROM python:3.11-slim

# torch: PyPI's Linux wheel is the CUDA build that GPU workers need. For a CPU-only
# image (about 2 GB smaller), add PyTorch's CPU wheel index, where torch==2.13.0 is
# the CPU build (docker-compose.yml passes $TORCH_INDEX_URL on):
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH="torch==2.13.0"
ARG TORCH_INDEX_URL=""

# The services run as uid 1000; /app, their working directory, and /data/artifacts, where
# the dashboard keeps learning curves (a volume, which takes this owner when first used),
# are theirs to write in. The code below stays root's, read-only to them.
RUN useradd --create-home --uid 1000 tuner && install -d -o tuner -g tuner /app /data/artifacts
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a change to tuner's code
# rebuilds only the small layers after this one. uv installs them (downloads, unpacks
# and byte-compiles in parallel): 35 s where pip took 2.5 min on 2 cores. An index given
# in TORCH_INDEX_URL is searched first, so torch comes from there.
COPY pyproject.toml ./
RUN pip install --no-cache-dir "uv>=0.5,<1" \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print(*p['dependencies'], *p['optional-dependencies']['postgres'], sep=chr(10))" > /tmp/requirements.txt \
 && uv pip install --no-cache --compile-bytecode --python "$(command -v python)" \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "$TORCH" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY README.md ./
COPY tuner ./tuner
COPY workers ./workers
COPY search_spaces ./search_spaces
RUN uv pip install --no-cache --compile-bytecode --python "$(command -v python)" --no-deps . \
 && rm -rf build ./*.egg-info
COPY docker/entrypoint.sh docker/scheduler.sh docker/healthcheck.py /usr/local/lib/tuner-docker/

USER tuner
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["/usr/local/lib/tuner-docker/entrypoint.sh"]
CMD ["tuner", "--help"]
