# Image of the billing app; docker-compose.yml runs it as `api` and `worker`
# (same image, different command), plus a one-shot `migrate`.
#
# Source runs through tsx as in development, so there is no separate build step
# whose output could drift from what the tests ran.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# tsx is a runtime dependency; test, lint and bench tools are not shipped.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY lua ./lua
COPY migrations ./migrations
# DATA_DIR defaults to .data; the unprivileged user must be able to create it.
RUN mkdir -p /app/.data && chown node:node /app/.data
USER node
# 8080: the api (HTTP and /metrics); 9464: the worker's metrics.
EXPOSE 8080 9464
CMD ["node_modules/.bin/tsx", "src/main.ts", "api"]
