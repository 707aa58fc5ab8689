// Command fail is a test flight that fails: it prints a ConfigMap on stdout,
// writes three lines to stderr and exits with code 3.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"partial"},"data":{"written":"before failing"}}`)
	fmt.Fprintln(os.Stderr, "fail: starting")
	fmt.Fprintln(os.Stderr, "fail: something went wrong: the flight could not render")
	fmt.Fprintln(os.Stderr, "fail: exiting with code 3")
	os.Exit(3)
}
