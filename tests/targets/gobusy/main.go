// A Go program that checks itself while ckpt dumps it (tests/e2e_killgo.rs): worker
// goroutines that keep writing and checking their own memory, timers, channels, and
// a main goroutine that prints a progress line every 10 ms once every worker moved on
// (and, built with cgo, a thread of its C code that never runs Go: cthread.go).
//
//	gobusy MIB WORKERS
//
// Anything wrong (a value changed, a worker that stops) prints a line starting with
// CORRUPT and exits 1.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func want(i int, gen uint64) uint64 { return uint64(i)*0x9E3779B97F4A7C15 ^ gen }

func corrupt(format string, a ...interface{}) {
	fmt.Printf("CORRUPT "+format+"\n", a...)
	os.Exit(1)
}

// deep recurses so that the goroutine's stack grows and shrinks.
func deep(n int, acc uint64) uint64 {
	var pad [64]uint64
	pad[n%64] = acc + uint64(n)
	if n == 0 {
		return pad[0] + acc
	}
	return deep(n-1, acc+pad[n%64])
}

func main() {
	mib, _ := strconv.Atoi(os.Args[1])
	workers, _ := strconv.Atoi(os.Args[2])
	words := mib << 17
	mem := make([]uint64, words)
	for i := range mem {
		mem[i] = want(i, 0)
	}
	usr1 := make(chan os.Signal, 4)
	signal.Notify(usr1, syscall.SIGUSR1)
	var usr1seen atomic.Int64
	go func() {
		for range usr1 {
			usr1seen.Add(1)
		}
	}()
	turns := make([]atomic.Uint64, workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			lo, hi := words*w/workers, words*(w+1)/workers
			at, gen := lo, uint64(0)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				for k := 0; k < 4096; k++ {
					if mem[at] != want(at, gen) {
						corrupt("word %d worker %d got %#x want %#x", at, w, mem[at], want(at, gen))
					}
					mem[at] = want(at, gen+1)
					if at++; at == hi {
						at, gen = lo, gen+1
					}
				}
				if d := deep(w*20+10, uint64(w)); d == 0 {
					corrupt("deep %d", w)
				}
				turns[w].Add(1)
				if w%2 == 0 {
					<-tick.C
				} else {
					runtime.Gosched()
					time.Sleep(time.Millisecond)
				}
			}
		}(w)
	}
	cThread()
	seen := make([]uint64, workers)
	cSeen := cTurns()
	for tick := 0; ; tick++ {
		for w := range seen {
			deadline := time.Now().Add(5 * time.Second)
			for turns[w].Load() == seen[w] {
				if time.Now().After(deadline) {
					corrupt("stalled worker %d", w)
				}
				time.Sleep(time.Millisecond)
			}
			seen[w] = turns[w].Load()
		}
		for deadline := time.Now().Add(5 * time.Second); cTurns() == cSeen; {
			if time.Now().After(deadline) {
				corrupt("stalled C thread")
			}
			time.Sleep(time.Millisecond)
		}
		cSeen = cTurns()
		fmt.Printf("tick %d usr1 %d\n", tick, usr1seen.Load())
		time.Sleep(10 * time.Millisecond)
	}
}
