// Command empty is a test flight that prints nothing and exits with code 0.
package main

func main() {}
