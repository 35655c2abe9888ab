# syntax=docker/dockerfile:1
# Two stages: Bun compiles the server into one self-contained executable (runtime, code and the
# chat page embedded), then only that file goes into a small glibc image and runs as non-root.
# Configure containers through the environment (every flag has a twin, see README): the
# HEALTHCHECK below reads HTTP_PORT from it.

# The Bun the project is tested with (`bun --version`); test/deploy/dockerfile.test.ts checks it.
ARG BUN_VERSION=1.4.5

FROM oven/bun:${BUN_VERSION} AS build
WORKDIR /src
# Lockfile first, so a source edit does not redo the install layer. --production: the build
# needs only the runtime dependencies (elysia, typebox, msgpackr), not the test and bench tools.
COPY package.json bun.lock ./
RUN bun install --frozen-lockfile --production
COPY tsconfig.json ./
COPY src ./src
COPY public ./public
# The same command as `make build`, only the output path differs.
RUN bun build --compile --minify src/index.ts --outfile /out/websocket-cluster

# The executable needs glibc (>= 2.17) and nothing else. Debian slim rather than distroless:
# the HEALTHCHECK needs a shell to set BUN_BE_BUN for one command (see below), and the
# Kubernetes StatefulSet uses sh, getent and sleep (waiting for its own DNS name, preStop).
FROM debian:bookworm-slim AS runtime
# A numeric user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin chat
COPY --from=build /out/websocket-cluster /usr/local/bin/websocket-cluster
# Empty and owned by root (created before USER), so not writable: the binary needs no files.
WORKDIR /app
USER 10001:10001
ENV CLUSTER_PORT=2551 \
    HTTP_PORT=8081 \
    HTTP_HOST=0.0.0.0 \
    BUN_CONFIG_DNS_TIME_TO_LIVE_SECONDS=5
# BUN_CONFIG_DNS_TIME_TO_LIVE_SECONDS: Bun caches DNS answers for 30 s by default; a restarted
# peer (Compose, Kubernetes) keeps its name but gets a new IP, so redial it sooner.
EXPOSE 2551 8081
# No curl or wget in the image: the compiled binary is the whole Bun runtime, and BUN_BE_BUN=1
# makes it behave as `bun`, so it can run a one-line fetch. Exit 0 only on 200 from /readyz
# (Up in a cluster with a leader). Kubernetes ignores HEALTHCHECK and uses its own probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD BUN_BE_BUN=1 exec websocket-cluster -e 'fetch("http://127.0.0.1:" + (process.env.HTTP_PORT || 8081) + "/readyz", { signal: AbortSignal.timeout(3000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))'
# SIGTERM starts the drain (clients told to move, leave the cluster, exit): give it ~15 s
# (`docker stop -t 20`, compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/websocket-cluster"]
