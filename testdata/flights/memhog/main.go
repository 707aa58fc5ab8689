// Command memhog is a test flight that allocates memory without bound: it
// appends 1 MiB slices forever and writes to every page so that the memory is
// really used. It only ends when the host stops it (memory limit).
package main

import (
	"fmt"
	"os"
)

// held keeps every allocation reachable so the garbage collector frees nothing.
var held [][]byte

func main() {
	fmt.Fprintln(os.Stderr, "memhog: allocating without bound")
	for i := 0; ; i++ {
		chunk := make([]byte, 1<<20)
		for j := 0; j < len(chunk); j += 4096 {
			chunk[j] = byte(i + j)
		}
		held = append(held, chunk)
		if i%64 == 0 {
			fmt.Fprintf(os.Stderr, "memhog: %d MiB held\n", len(held))
		}
	}
}
