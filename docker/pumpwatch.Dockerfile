# pumpwatch: one image for the pipeline's roles in docker-compose.yml (edge agent,
# consumer, dashboard, certificate/model initialisation). The model server runs the
# SageMaker inference container instead (model-server.Dockerfile).
#
#   docker build -f docker/pumpwatch.Dockerfile -t pumpwatch .
#   docker run --rm pumpwatch pumpwatch --help

# The broker's retain guard plugin (pumpwatch/retain_guard.c: no headers, no libc), built
# here so the image itself needs no compiler; the init container's broker config copies
# it from $PUMPWATCH_RETAIN_GUARD into the state volume the broker loads it from.
FROM python:3.11-slim AS retain-guard
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
COPY pumpwatch/retain_guard.c /src/retain_guard.c
RUN gcc -shared -fPIC -O2 -nostdlib -o /src/pumpwatch_retain_guard.so /src/retain_guard.c

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1

WORKDIR /opt/pumpwatch
COPY pyproject.toml README.md /opt/pumpwatch/
COPY dsp/ /opt/pumpwatch/dsp/
COPY simulator/ /opt/pumpwatch/simulator/
COPY edge/ /opt/pumpwatch/edge/
COPY cloud/ /opt/pumpwatch/cloud/
COPY models/ /opt/pumpwatch/models/
COPY pumpwatch/ /opt/pumpwatch/pumpwatch/
RUN pip install --no-cache-dir '/opt/pumpwatch[all]' && pumpwatch --version
COPY --from=retain-guard /src/pumpwatch_retain_guard.so /usr/local/lib/pumpwatch/
ENV PUMPWATCH_RETAIN_GUARD=/usr/local/lib/pumpwatch/pumpwatch_retain_guard.so
COPY docker/stack-init.sh /usr/local/bin/pumpwatch-stack-init
RUN chmod 0755 /usr/local/bin/pumpwatch-stack-init

# state (certificates, models, store, spool) lives in a volume mounted here
VOLUME ["/state"]
CMD ["pumpwatch", "--help"]
