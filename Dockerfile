# One image for every agentbus service; the command picks the service:
#   docker run agentbus run inventory
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY agentbus agentbus
COPY events events
COPY consumers consumers
COPY agents agents
COPY tools tools
COPY evals evals
COPY prompts prompts
RUN uv sync --frozen --no-dev
ENV PATH=/app/.venv/bin:$PATH AGENTBUS_DATA=/data
RUN useradd --system --uid 10001 agentbus && mkdir /data && chown agentbus /data
USER agentbus
EXPOSE 9464
ENTRYPOINT ["agentbus"]
CMD ["run", "all"]
