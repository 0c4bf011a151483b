package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them all.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
