// Command flood is a test flight that writes stdout without end, in 1 MiB
// chunks of YAML comment lines. When a write fails (the host closed or capped
// stdout) it reports the error on stderr and exits with code 1, unless
// --ignore-errors is given, in which case it keeps writing forever.
package main

import (
	"bytes"
	"fmt"
	"os"
)

func main() {
	ignoreErrors := false
	for _, arg := range os.Args[1:] {
		if arg == "--ignore-errors" {
			ignoreErrors = true
		}
	}
	line := []byte("# flood flood flood flood flood flood flood flood flood flood flood\n")
	chunk := bytes.Repeat(line, (1<<20)/len(line)+1)[:1<<20]
	for written := 0; ; written += len(chunk) {
		if _, err := os.Stdout.Write(chunk); err != nil && !ignoreErrors {
			fmt.Fprintf(os.Stderr, "flood: write failed after %d bytes: %v\n", written, err)
			os.Exit(1)
		}
	}
}
