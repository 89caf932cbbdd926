# pumpwatch model server: the SageMaker inference container.
#
#   docker build -f docker/model-server.Dockerfile -t pumpwatch-model .
#   docker run -p 8080:8080 -v $PWD/bundle:/opt/ml/model pumpwatch-model serve
#
# SageMaker starts it as `docker run IMAGE serve`, mounts the model package's
# model.tar.gz (extracted) at /opt/ml/model and sends GET /ping and
# POST /invocations to port 8080. Only the inference code is copied in: dsp/
# (the report schema and its codec), models/serving/ (handler, server,
# bundles, physics evidence) and models/registry/ (the server's --registry
# option); no training code, no pipeline code. See docs/endpoint.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    PYTHONPATH=/opt/pumpwatch

WORKDIR /opt/pumpwatch
COPY docker/model-server-requirements.txt /opt/pumpwatch/requirements.txt
RUN pip install --no-cache-dir -r /opt/pumpwatch/requirements.txt

COPY dsp/ /opt/pumpwatch/dsp/
COPY models/__init__.py /opt/pumpwatch/models/__init__.py
COPY models/serving/ /opt/pumpwatch/models/serving/
COPY models/registry/ /opt/pumpwatch/models/registry/
COPY docker/serve /usr/local/bin/serve
RUN chmod 0755 /usr/local/bin/serve && python -c "import models.serving.server"

EXPOSE 8080
CMD ["serve"]
