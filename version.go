package pollsse

// Version is the release of this module, as CHANGELOG.md names it.
const Version = "0.1.0"

// userAgent is the User-Agent of upstream requests, unless header_up sets
// one. It names the module and its version, so that the upstream's
// operators can tell its polls from other traffic; it leaves out Caddy's
// version, which says nothing about the polls and only tells the upstream
// more about the server that makes them.
const userAgent = "caddy-pollsse/" + Version
