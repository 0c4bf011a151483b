package pollsse

// watcherStreams counts the streams whose clients the process's watcher
// watches.
func watcherStreams() int {
	clients.mu.Lock()
	defer clients.mu.Unlock()
	return len(clients.watched)
}

// watcherWatches tells whether the streams of groups are watched by the
// process's watcher on this system, rather than by goroutines of their own.
const watcherWatches = true
