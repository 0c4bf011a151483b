//go:build !race

package pollsse

const raceEnabled = false
