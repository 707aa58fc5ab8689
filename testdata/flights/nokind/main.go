// Command nokind is a test flight that prints an object without a kind.
package main

import "fmt"

func main() {
	fmt.Println(`{"apiVersion":"v1","metadata":{"name":"x"}}`)
}
