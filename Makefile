# make test: install what the tests need when it is missing, then vet and
# run every test (Go with the race detector, headless Chromium and nginx
# included, and the browser client's tests under Node).

GO ?= go
# apt-get needs root; use sudo when not root.
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo) apt-get
export DEBIAN_FRONTEND := noninteractive

.PHONY: test deps vet go-test client-test demo

test: deps vet go-test client-test

# Node.js runs the browser client's tests; Debian's chromium is the browser
# that the Go tests drive (browser_test.go); nginx-light is the nginx that
# examples/nginx runs behind (examples_test.go).
deps:
	@command -v node >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends nodejs; }
	@command -v chromium >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium; }
	@test -x /usr/sbin/nginx || command -v nginx >/dev/null || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends nginx-light; }

vet:
	$(GO) vet ./...

go-test:
	$(GO) test -race -count=1 ./...

client-test:
	node --test client/

demo:
	$(GO) run ./cmd/caddy run --config examples/Caddyfile

# soak-short: a minute of everything at once against a race-enabled Caddy
# (cmd/pollsse-soak, README "Soak test"), with a fixed seed.
.PHONY: soak-short
soak-short:
	$(GO) run ./cmd/pollsse-soak -duration 60s -seed 1
test: soak-short
