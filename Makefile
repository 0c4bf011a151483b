# make test: install what the tests need when it is missing, then vet,
# cross-compile for every supported system, build Caddy with xcaddy as a user
# does, and run every test (Go with the race detector, headless Chromium and
# nginx included, and the browser client's tests under Node), then a minute
# of the soak on each store.

GO ?= go
# apt-get needs root; use sudo when not root.
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo) apt-get
export DEBIAN_FRONTEND := noninteractive

MODULE := github.com/pollsse/caddy-pollsse
# The Caddy that go.mod names, which the tests run and the README's xcaddy
# build pins.
CADDY_VERSION := $(shell awk '$$1 == "github.com/caddyserver/caddy/v2" { print $$2 }' go.mod)
XCADDY_VERSION := v0.4.5
# Tools that make installs, one directory per version; git ignores it.
TOOLS := $(CURDIR)/.tools
XCADDY := $(TOOLS)/xcaddy-$(XCADDY_VERSION)/xcaddy

# The systems the module builds and vets for, as GOOS/GOARCH.
CROSS_TARGETS ?= windows/amd64 darwin/arm64 freebsd/amd64 linux/amd64 linux/arm64

.PHONY: test deps vet cross xcaddy-build go-test client-deps client-test demo soak-short

test: deps vet client-test cross xcaddy-build go-test soak-short

# Node.js and npm run the browser client's tests (npm installs TypeScript for
# them); Debian's chromium is the browser that the Go tests drive
# (browser_test.go); nginx-light is the nginx that examples/nginx runs behind
# (examples_test.go); redis-server and redis-cli are the Redis, single and
# Cluster, that the tests of the redis store start.
deps:
	@command -v node >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends nodejs; }
	@command -v npm >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends npm; }
	@command -v chromium >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium; }
	@test -x /usr/sbin/nginx || command -v nginx >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends nginx-light; }
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends redis-server redis-tools; }

vet:
	$(GO) vet ./...

# cross builds and vets every package, cmd/caddy and the tools included, for
# each of CROSS_TARGETS without cgo, and names the systems that failed.
cross:
	@failed=; for t in $(CROSS_TARGETS); do \
		echo "cross: GOOS=$${t%/*} GOARCH=$${t#*/} go build ./... && go vet ./..."; \
		CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build ./... && \
		CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./... || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "cross: the module does not build or vet for$$failed (the errors are above)" >&2; exit 1; \
	fi

$(XCADDY):
	GOBIN=$(dir $@) $(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)

# xcaddy-build builds Caddy with this checkout as the README tells users to,
# into a temporary directory, and checks that the binary has the module. It
# runs with GOSUMDB=off, since the checksum database may be out of reach and
# xcaddy starts from an empty go.sum; instead it checks that every sum the
# build took is one this repository's go.sum has.
xcaddy-build: $(XCADDY)
	@for line in 'go install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)' \
			'xcaddy build $(CADDY_VERSION) --with $(MODULE)@v0.0.0=.'; do \
		grep -qxF "$$line" README.md || { echo "xcaddy-build: README.md does not say \"$$line\", which this target runs" >&2; exit 1; }; \
	done
	@echo "xcaddy-build: GOSUMDB=off xcaddy build $(CADDY_VERSION) --with $(MODULE)@v0.0.0=."
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	if ! GOSUMDB=off TMPDIR="$$tmp" XCADDY_SKIP_CLEANUP=1 $(XCADDY) build $(CADDY_VERSION) \
			--with $(MODULE)@v0.0.0=. --output "$$tmp/caddy" >"$$tmp/log" 2>&1; then \
		cat "$$tmp/log"; echo "xcaddy-build: xcaddy build failed (its output is above)" >&2; exit 1; \
	fi && \
	unknown=$$(grep -vxF -f go.sum "$$tmp"/buildenv_*/go.sum); \
	if [ -n "$$unknown" ]; then \
		echo "$$unknown"; echo "xcaddy-build: the build took these sums, which go.sum does not have" >&2; exit 1; \
	fi && \
	"$$tmp/caddy" list-modules >"$$tmp/modules" && \
	if ! grep -qxF http.handlers.poll_sse "$$tmp/modules"; then \
		cat "$$tmp/modules"; echo "xcaddy-build: caddy list-modules does not list http.handlers.poll_sse" >&2; exit 1; \
	fi && \
	echo "xcaddy-build: caddy list-modules lists http.handlers.poll_sse"

go-test:
	$(GO) test -race -count=1 ./...

# npm ci installs the client's devDependencies (TypeScript) into
# client/node_modules, again only when package.json or the lock changed.
client/node_modules/.package-lock.json: client/package.json client/package-lock.json
	cd client && npm ci --no-audit --no-fund

client-deps: client/node_modules/.package-lock.json

client-test: client-deps
	node --test client/

demo:
	$(GO) run ./cmd/caddy run --config examples/Caddyfile

# soak-short: a minute of everything at once against a race-enabled Caddy
# (cmd/pollsse-soak, README "Soak test"), with a fixed seed, on the memory
# store, then a minute of three instances on one redis-server.
soak-short:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	echo "soak-short: go build -race -o $$tmp/caddy ./cmd/caddy" && \
	$(GO) build -race -o "$$tmp/caddy" ./cmd/caddy && \
	echo "soak-short: go run ./cmd/pollsse-soak -duration 60s -seed 1" && \
	$(GO) run ./cmd/pollsse-soak -caddy "$$tmp/caddy" -duration 60s -seed 1 && \
	echo "soak-short: go run ./cmd/pollsse-soak -duration 60s -seed 1 -instances 3 -store redis" && \
	$(GO) run ./cmd/pollsse-soak -caddy "$$tmp/caddy" -duration 60s -seed 1 -instances 3 -store redis
