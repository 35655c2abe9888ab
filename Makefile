# The two front-door commands: `make cluster` and `make test`.
.PHONY: cluster test build deps deps-browser bench bench-chat sim clean

cluster: deps
	bun run scripts/cluster.ts

test: deps-browser
	bunx tsc --noEmit -p .
	bun test

build: deps
	bun build --compile --minify src/index.ts --outfile dist/websocket-cluster

sim: deps
	bun run sim --seeds 100000

# Not part of `make test`: ours against the Bun ceiling and Socket.IO + Redis (bench/scale.ts;
# SCALE_* variables set the sizes). bench-chat: the older per-delivery figures.
bench: deps
	@bash scripts/deps.sh --bench
	bun run bench/scale.ts

bench-chat: deps
	@bash scripts/deps.sh --bench
	bun run bench/cluster-chat.ts
	bun run bench/compare.ts

deps:
	@bash scripts/deps.sh

deps-browser:
	@bash scripts/deps.sh --browser --netns

clean:
	rm -rf dist test/artifacts
