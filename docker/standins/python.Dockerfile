# Stand-in for python:3.11-slim: Debian bookworm's Python 3.11 in a virtual environment
# on PATH, so `pip install` works as in the official image.
FROM tuner-standin/debian:bookworm
# The machine's CA bundle: it reaches PyPI through a proxy with a CA of its own.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /usr/local/python \
 && ln -s /usr/local/python/bin/python /usr/local/bin/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
CMD ["python3"]
