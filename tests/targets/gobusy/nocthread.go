//go:build !cgo

// gobusy built without cgo: no C thread (see cthread.go).
package main

func cThread() {}

// cTurns counts up by itself: the C thread is not there to be waited for.
var fakeTurns uint64

func cTurns() uint64 {
	fakeTurns++
	return fakeTurns
}
