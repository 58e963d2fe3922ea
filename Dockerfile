# lookout: the sidecar image. Build: docker build -t ghcr.io/yolo-lookout/lookout:0.1.0 .
# Two stages: compilers and pip caches stay in the first; the final image holds Python,
# the installed virtual environment and nothing to build with.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/lookout
# the whole context, as .dockerignore trims it: setup.py lists the packages, so no folder
# can be forgotten here (tests/test_image.py builds a wheel from exactly this)
COPY . .
# the tap Envoy loads: built here, shipped as package data beside the module that finds it
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev make zlib1g-dev \
 && make -C tap BUILD=../sidecar/dataplane ../sidecar/dataplane/liblookout_tap.so
RUN /opt/lookout/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/lookout/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# the uid/gid the injected securityContext runs as (runAsNonRoot needs a numeric user)
RUN groupadd --system --gid 65532 lookout \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin lookout
COPY --from=build /opt/lookout /opt/lookout
ENV PATH=/opt/lookout/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["lookout"]
CMD ["serve"]
