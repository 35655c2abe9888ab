# The two front-door commands: `make cluster` and `make test`.
.PHONY: cluster test build deps deps-browser bench sim clean

cluster: deps
	bun run scripts/cluster.ts

test: deps-browser
	bunx tsc --noEmit -p .
	bun test

build: deps
	bun build --compile --minify src/index.ts --outfile dist/websocket-cluster

sim: deps
	bun run sim --seeds 100000

bench: deps
	@bash scripts/deps.sh --bench
	bun run bench/cluster-chat.ts
	bun run bench/compare.ts

deps:
	@bash scripts/deps.sh

deps-browser:
	@bash scripts/deps.sh --browser --netns

clean:
	rm -rf dist test/artifacts
