// Command spin is a test flight that never ends: an infinite CPU loop with no
// calls and no allocation. It only ends when the host stops it (timeout).
package main

import (
	"fmt"
	"os"
)

// counter is a package variable so the loop has an observable effect.
var counter uint64

func main() {
	fmt.Fprintln(os.Stderr, "spin: looping forever")
	for {
		counter = counter*6364136223846793005 + 1442695040888963407
	}
}
