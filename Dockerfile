# One image for every procsmith stage (see docker-compose.yml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY stages ./stages
COPY simulation ./simulation
COPY config ./config
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
# The wheel, as users install it: the bundled config and signatures are inside the package
# (pipeline.bundled), found from any working directory.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/procsmith-*.whl && rm -rf /wheels
WORKDIR /
# Reading other processes' /proc/<pid>/exe needs root (with CAP_SYS_PTRACE, added per service).
ENTRYPOINT ["procsmith"]
CMD ["--help"]
