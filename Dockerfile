# One image for every procsmith stage (see docker-compose.yml).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY stages ./stages
COPY config ./config
# Editable, so the bundled config/ (signatures included) is found next to the code.
RUN pip install --no-cache-dir -e .

# Reading other processes' /proc/<pid>/exe needs root (with CAP_SYS_PTRACE, added per service).
ENTRYPOINT ["procsmith"]
CMD ["--help"]
