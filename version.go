package pollsse

// Version is the release of this module, as CHANGELOG.md names it.
const Version = "0.1.0"
