// Command caddy is Caddy with its standard modules and the poll_sse handler,
// as an xcaddy build would produce it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/pollsse/caddy-pollsse"
)

func main() {
	caddycmd.Main()
}
