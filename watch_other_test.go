//go:build !linux

package pollsse

// watcherStreams is 0: this system has no watcher.
func watcherStreams() int { return 0 }

// watcherWatches tells whether the streams of groups are watched by the
// process's watcher on this system, rather than by goroutines of their own.
const watcherWatches = false
