# syntax=docker/dockerfile:1
# deid-node: receives DICOM, de-identifies it, forwards it to a research PACS.
#   docker build -t deid-node .
#   docker run -v site.yaml:/etc/deid-node/node.yaml:ro -v deid-data:/var/lib/deid-node -p 11112:11112 deid-node
# docker-compose.yml runs it with PostgreSQL and Orthanc.
FROM python:3.11-slim-bookworm

# Tesseract reads burned-in text; opencv-python (pulled in by presidio-image-redactor) loads libGL and GLib.
# Versions are not pinned: bookworm's security archive replaces them, and a pin would break the next build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# OMP_THREAD_LIMIT=1: Tesseract is about five times faster per image without OpenMP threads.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_THREAD_LIMIT=1

RUN groupadd --system --gid 10001 deid \
    && useradd --system --uid 10001 --gid deid --home-dir /var/lib/deid-node --no-create-home deid \
    && install -d -o deid -g deid -m 0750 /var/lib/deid-node

# The migrations are found beside the package (node/persist/db.py), so the source stays here, owned by
# root and read-only to the node, and is installed in place.
WORKDIR /opt/deid-node
COPY . .
RUN pip install --no-cache-dir -e .

# Settings: mount the site's file at DEID_CONFIG (docker-compose.yml shows one); until then the node
# stops at start naming the missing file. Its spool, SQLite database (when no PostgreSQL is used) and
# secret file (when DEID_SECRET is not set) belong in the volume.
ENV DEID_CONFIG=/etc/deid-node/node.yaml
VOLUME ["/var/lib/deid-node"]
EXPOSE 11112

USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('DEID_PORT', '11112'))), 3).close()"]
ENTRYPOINT ["deid-node"]
CMD ["serve"]
