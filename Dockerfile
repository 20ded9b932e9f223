# syntax=docker/dockerfile:1
# One image for every role: SERVICES picks the services a container runs
# (keyring | api,batcher,records,metrics | signer); unset runs them all in one node.

# Pinned to a patch release of Node 22 (package.json engines: >=22); bump deliberately.
ARG NODE_IMAGE=node:22.23.2-bookworm-slim

# ---- build: compile the TypeScript with the dev dependencies -------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the build needs no install scripts (skips the `node` binary download).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json moleculer.config.ts ./
COPY src ./src
COPY mixins ./mixins
COPY services ./services
# Called through node directly: node_modules/.bin/node (the dev dependency) is not installed here.
RUN node node_modules/typescript/bin/tsc -p tsconfig.json

# ---- pkcs11js: the PKCS#11 binding (KEY_STORE=pkcs11), compiled with tools the image does not ship
FROM ${NODE_IMAGE} AS pkcs11js
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends g++ make python3 \
    && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm rebuild pkcs11js

# ---- runtime: production dependencies and the compiled JavaScript only ---------------
FROM ${NODE_IMAGE} AS runtime
# SOFTHSM=1 (compose's SoftHSM profile, docker-compose.softhsm.yml) adds SoftHSM, to try
# KEY_STORE=pkcs11 without an HSM; production mounts its HSM vendor's module instead.
ARG SOFTHSM=
ENV NODE_ENV=production \
    SERVICEDIR=dist/services \
    DATA_DIR=/data \
    PORT=3000 \
    HEALTH_PORT=3001 \
    METRICS_PORT=3030
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=pkcs11js /app/node_modules/pkcs11js/build/Release/pkcs11.node ./node_modules/pkcs11js/build/Release/pkcs11.node
RUN if [ -n "$SOFTHSM" ]; then \
      apt-get update && apt-get install -y --no-install-recommends softhsm2 \
      && rm -rf /var/lib/apt/lists/* && mkdir -p /softhsm && chown 1000:1000 /softhsm; \
    fi
COPY --from=build /app/dist/moleculer.config.js ./dist/moleculer.config.js
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/mixins ./dist/mixins
COPY --from=build /app/dist/services ./dist/services
# The gateway's dashboard and API docs (served from /app/public, beside dist/).
COPY public ./public
# The embedded store's folder, writable by the runtime user (unused when MONGO_URI is set),
# and where compose keeps the signers' credential (a volume takes this ownership).
RUN mkdir -p /data /credentials && chown 1000:1000 /data /credentials
# The `node` user of the official image, numeric so Kubernetes can verify runAsNonRoot.
USER 1000:1000
EXPOSE 3000 3001 3030
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HEALTH_PORT || 3001) + '/health/ready').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form, no shell and no npm: node is PID 1 and gets SIGTERM, so the broker drains and stops.
# SERVICEDIR (above) is where moleculer-runner resolves the SERVICES names.
CMD ["node", "--disable-warning=ExperimentalWarning", "node_modules/moleculer/bin/moleculer-runner.js", "--config", "dist/moleculer.config.js"]
